package main

import "testing"

func TestSeqSet(t *testing.T) {
	type step struct {
		seq              uint32
		fresh, reordered bool
	}
	tests := map[string]struct {
		steps     []step
		wantCount int
	}{
		"in order":      {steps: []step{{0, true, false}, {1, true, false}, {2, true, false}}, wantCount: 3},
		"duplicate":     {steps: []step{{0, true, false}, {0, false, false}}, wantCount: 1},
		"late arrival":  {steps: []step{{0, true, false}, {2, true, false}, {1, true, true}}, wantCount: 3},
		"far word":      {steps: []step{{1000, true, false}, {5, true, true}, {1000, false, false}}, wantCount: 2},
		"word boundary": {steps: []step{{63, true, false}, {64, true, false}, {63, false, false}}, wantCount: 2},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := newSeqSet()
			for i, st := range tc.steps {
				fresh, reordered := s.add(st.seq)
				if fresh != st.fresh || reordered != st.reordered {
					t.Fatalf("step %d add(%d) = fresh %v reordered %v, want %v %v", i, st.seq, fresh, reordered, st.fresh, st.reordered)
				}
				if !s.has(st.seq) {
					t.Fatalf("step %d: has(%d) false after add", i, st.seq)
				}
			}
			if s.count != tc.wantCount {
				t.Fatalf("count %d, want %d", s.count, tc.wantCount)
			}
		})
	}
}
