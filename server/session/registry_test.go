package session

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// hangTimeout bounds waits for goroutines so that a broken Wait fails the
// test instead of hanging it; it is never a measure of speed.
const hangTimeout = 10 * time.Second

// registryEntry is a session as the registry sees it: only its id matters.
func registryEntry(id string) *Session { return &Session{id: id} }

func TestRegistryAdd(t *testing.T) {
	cases := []struct {
		name  string
		limit int
		// add is how many sessions are added; those past the limit fail.
		add     int
		wantLen int
	}{
		{name: "below the limit", limit: 3, add: 2, wantLen: 2},
		{name: "up to the limit", limit: 3, add: 3, wantLen: 3},
		{name: "past the limit", limit: 3, add: 5, wantLen: 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRegistry(tc.limit)
			var ids []string
			for i := range tc.add {
				id := fmt.Sprintf("sess_%d", i)
				remove, err := r.Add(registryEntry(id))
				if i < tc.limit {
					if err != nil || remove == nil {
						t.Fatalf("Add %d of limit %d: %v", i+1, tc.limit, err)
					}
					ids = append(ids, id)
					continue
				}
				if !errors.Is(err, ErrLimit) || remove != nil {
					t.Fatalf("Add %d of limit %d = (remove set %v, %v), want ErrLimit and no remove", i+1, tc.limit, remove != nil, err)
				}
			}
			if got := r.Len(); got != tc.wantLen {
				t.Errorf("Len = %d, want %d", got, tc.wantLen)
			}
			if got := snapshotIDs(r); !slices.Equal(got, ids) {
				t.Errorf("Snapshot = %v, want %v", got, ids)
			}
		})
	}
}

func snapshotIDs(r *Registry) []string {
	var ids []string
	for _, s := range r.Snapshot() {
		ids = append(ids, s.ID())
	}
	slices.Sort(ids)
	return ids
}

func TestRegistryRemove(t *testing.T) {
	cases := []struct {
		name string
		// removals are indexes into the added sessions, in order; repeats
		// call the same remove function again.
		removals []int
		wantIDs  []string
	}{
		{name: "remove one", removals: []int{0}, wantIDs: []string{"sess_1"}},
		{name: "remove twice is removing once", removals: []int{0, 0}, wantIDs: []string{"sess_1"}},
		{name: "remove all, twice over", removals: []int{1, 0, 1, 0}, wantIDs: nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRegistry(2)
			var removes []func()
			for _, id := range []string{"sess_0", "sess_1"} {
				remove, err := r.Add(registryEntry(id))
				if err != nil {
					t.Fatal(err)
				}
				removes = append(removes, remove)
			}
			for _, i := range tc.removals {
				removes[i]()
			}
			if got := snapshotIDs(r); !slices.Equal(got, tc.wantIDs) {
				t.Errorf("after removals %v: sessions %v, want %v", tc.removals, got, tc.wantIDs)
			}
			// Room that was freed can be taken again, and only that room.
			free := 2 - len(tc.wantIDs)
			for i := range free {
				if _, err := r.Add(registryEntry(fmt.Sprintf("sess_new_%d", i))); err != nil {
					t.Fatalf("Add into freed room %d: %v", i, err)
				}
			}
			if _, err := r.Add(registryEntry("sess_extra")); !errors.Is(err, ErrLimit) {
				t.Errorf("Add past the limit after refilling = %v, want ErrLimit", err)
			}
		})
	}
}

// TestRegistryRemoveKeepsOthers checks that a stale remove, called again
// after its session left, never takes out another session.
func TestRegistryRemoveKeepsOthers(t *testing.T) {
	r := NewRegistry(2)
	removeA, _ := r.Add(registryEntry("sess_a"))
	removeA()
	if _, err := r.Add(registryEntry("sess_b")); err != nil {
		t.Fatal(err)
	}
	removeA()
	if got := snapshotIDs(r); !slices.Equal(got, []string{"sess_b"}) {
		t.Errorf("sessions = %v, want [sess_b]", got)
	}
}

func TestRegistryClose(t *testing.T) {
	r := NewRegistry(3)
	remove, err := r.Add(registryEntry("sess_live"))
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if _, err := r.Add(registryEntry("sess_new")); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close = %v, want ErrClosed", err)
	}
	if got := r.Len(); got != 1 {
		t.Errorf("Len after Close = %d, want the live session kept", got)
	}
	r.Close() // closing again is harmless
	remove()
	if _, err := r.Add(registryEntry("sess_later")); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close with room = %v, want ErrClosed", err)
	}
	if got := r.Len(); got != 0 {
		t.Errorf("Len = %d, want 0", got)
	}
}

// TestRegistryClosedBeatsLimit checks that a draining server says so, even
// when it is also full: the client should go elsewhere, not retry here.
func TestRegistryClosedBeatsLimit(t *testing.T) {
	r := NewRegistry(1)
	if _, err := r.Add(registryEntry("sess_a")); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if _, err := r.Add(registryEntry("sess_b")); !errors.Is(err, ErrClosed) {
		t.Errorf("Add to a full, closed registry = %v, want ErrClosed", err)
	}
}

func TestRegistryWait(t *testing.T) {
	cases := []struct {
		name     string
		sessions int
		// act runs while Wait blocks, given the sessions' remove functions.
		act       func(removes []func(), cancel context.CancelFunc)
		cancelled bool // ctx is cancelled before Wait starts
		wantErr   error
	}{
		{name: "empty registry returns at once", sessions: 0},
		{name: "empty registry ignores a cancelled context", sessions: 0, cancelled: true},
		{name: "returns when the last session leaves", sessions: 3, act: func(removes []func(), _ context.CancelFunc) {
			for _, remove := range removes {
				remove()
			}
		}},
		{name: "keeps waiting while a session is left", sessions: 2, act: func(removes []func(), cancel context.CancelFunc) {
			removes[0]()
			removes[0]()
			cancel()
		}, wantErr: context.Canceled},
		{name: "returns when the context is done", sessions: 1, act: func(_ []func(), cancel context.CancelFunc) {
			cancel()
		}, wantErr: context.Canceled},
		{name: "returns at once on a cancelled context", sessions: 1, cancelled: true, wantErr: context.Canceled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRegistry(tc.sessions)
			removes := make([]func(), tc.sessions)
			for i := range removes {
				var err error
				if removes[i], err = r.Add(registryEntry(fmt.Sprintf("sess_%d", i))); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancelled {
				cancel()
			}
			result := make(chan error, 1)
			go func() { result <- r.Wait(ctx) }()
			if tc.act != nil {
				tc.act(removes, cancel)
			}
			select {
			case err := <-result:
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("Wait = %v, want %v", err, tc.wantErr)
				}
			case <-time.After(hangTimeout):
				t.Fatal("Wait did not return")
			}
			for _, remove := range removes {
				remove()
			}
		})
	}
}

// TestRegistryConcurrent checks the limit under concurrent Add and remove
// (run with -race).
func TestRegistryConcurrent(t *testing.T) {
	const limit = 8
	r := NewRegistry(limit)
	var wg sync.WaitGroup
	var mu sync.Mutex
	maxSeen := 0
	for g := range 32 {
		wg.Go(func() {
			for i := range 200 {
				remove, err := r.Add(registryEntry(fmt.Sprintf("sess_%d_%d", g, i)))
				if errors.Is(err, ErrLimit) {
					continue
				}
				if err != nil {
					t.Errorf("Add: %v", err)
					return
				}
				n := r.Len()
				mu.Lock()
				maxSeen = max(maxSeen, n)
				mu.Unlock()
				remove()
			}
		})
	}
	waiter := make(chan error, 1)
	go func() { waiter <- r.Wait(context.Background()) }()
	wg.Wait()
	if maxSeen > limit {
		t.Errorf("saw %d sessions registered, limit %d", maxSeen, limit)
	}
	if got := r.Len(); got != 0 {
		t.Errorf("Len = %d after every session left", got)
	}
	select {
	case err := <-waiter:
		if err != nil {
			t.Errorf("Wait = %v", err)
		}
	case <-time.After(hangTimeout):
		t.Fatal("Wait did not return once every session left")
	}
}
