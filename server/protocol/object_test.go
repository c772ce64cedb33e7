package protocol

import "testing"

func TestScanObject(t *testing.T) {
	tests := []struct {
		name string
		data string
		want []string // key=value, in order; nil when refused
	}{
		{name: "members in order", data: `{"type":"a","n":[1,{"b":"}"}],"s":"x\"y"}`, want: []string{`type="a"`, `n=[1,{"b":"}"}]`, `s="x\"y"`}},
		{name: "escaped key kept raw", data: `{"t\u0079pe":1}`, want: []string{`t\u0079pe=1`}},
		{name: "empty object", data: ` {} `, want: []string{}},
		{name: "not an object", data: `[1]`},
		{name: "trailing data", data: `{"a":1}x`},
		{name: "invalid nested value", data: `{"a":{"b":}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := []string{}
			ok := ScanObject([]byte(tt.data), func(m ObjectMember) bool {
				got = append(got, string(m.Key)+"="+string(m.Value))
				return true
			})
			if ok != (tt.want != nil) {
				t.Fatalf("ScanObject = %v for %s", ok, tt.data)
			}
			if ok && len(got) != len(tt.want) {
				t.Fatalf("members %v, want %v", got, tt.want)
			}
			for i := range tt.want {
				if got[i] != tt.want[i] {
					t.Errorf("member %d = %s, want %s", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestScanObjectStopsWhenAsked(t *testing.T) {
	calls := 0
	if ScanObject([]byte(`{"a":1,"b":2}`), func(ObjectMember) bool { calls++; return false }) || calls != 1 {
		t.Fatalf("ScanObject went on after fn returned false (%d calls)", calls)
	}
}
