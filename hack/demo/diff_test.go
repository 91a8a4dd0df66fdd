package main

import "testing"

func TestUnifiedDiff(t *testing.T) {
	a := "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\n"
	b := "a\nb\nc\nX\nd\ne\nf\ng\nh\ni\nj\nY\n"
	want := `--- old
+++ new
@@ -1,6 +1,7 @@
 a
 b
 c
+X
 d
 e
 f
@@ -8,4 +9,4 @@
 h
 i
 j
-k
+Y`
	if got := unifiedDiff("old", "new", a, b, 3); got != want {
		t.Errorf("diff:\n%s\nwant:\n%s", got, want)
	}
	if got := unifiedDiff("old", "new", a, a, 3); got != "--- old\n+++ new" {
		t.Errorf("diff of equal texts:\n%s", got)
	}
}
