package controllers

// What the envtest suites (package controllers_test) need of the package's
// own test helpers.
var WithCRDDefaults = withCRDDefaults
