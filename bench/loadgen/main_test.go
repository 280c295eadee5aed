package main

// go test ./... (in bench/loadgen): the schedule, the data and the headers (against a
// local test server).

import (
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

func TestScheduleRampsThenHolds(t *testing.T) {
	at := schedule(100, 10*time.Second, 30*time.Second)
	var last time.Duration
	n := 0
	for k := 0; ; k++ {
		offset, more := at(k)
		if !more {
			break
		}
		if offset < last {
			t.Fatalf("send %d at %s, before the previous one (%s)", k, offset, last)
		}
		last, n = offset, n+1
	}
	if want := 100*10/2 + 100*30; n != want {
		t.Fatalf("%d sends, want %d", n, want)
	}
	// Linear ramp: a quarter of the ramp's sends by half of it.
	halfway := 0
	for k := 0; ; k++ {
		if offset, _ := at(k); offset > 5*time.Second {
			break
		}
		halfway++
	}
	if halfway < 120 || halfway > 130 {
		t.Fatalf("%d sends in the first 5 s of the ramp, want 125", halfway)
	}
}

func TestValidPayloads(t *testing.T) {
	p := newPayloads(rand.New(rand.NewPCG(1, 1)))
	for i := 0; i < 5000; i++ {
		body, name := p.valid()
		var w warrior
		if err := json.Unmarshal(body, &w); err != nil {
			t.Fatal(err)
		}
		if w.Name != name || utf8.RuneCountInString(name) > 100 || strings.TrimSpace(name) != name {
			t.Fatalf("bad name %q", name)
		}
		if dob, err := time.Parse("2006-01-02", w.Dob); err != nil || dob.Year() < 1900 || dob.Year() > 2010 {
			t.Fatalf("bad dob %q", w.Dob)
		}
		seen := map[string]bool{}
		for _, s := range w.FightSkills {
			if seen[strings.ToLower(s)] || utf8.RuneCountInString(s) > 50 {
				t.Fatalf("bad skills %q", w.FightSkills)
			}
			seen[strings.ToLower(s)] = true
		}
		if len(w.FightSkills) > 6 {
			t.Fatalf("%d skills", len(w.FightSkills))
		}
	}
}

func TestEveryInvalidKindIsMade(t *testing.T) {
	p := newPayloads(rand.New(rand.NewPCG(1, 1)))
	made := map[string]bool{}
	for i := 0; i < 1000; i++ {
		body, kind := p.invalid()
		made[kind] = true
		if kind == "long_name" {
			var fields map[string]any
			if err := json.Unmarshal(body, &fields); err != nil || len(fields["name"].(string)) < 101 {
				t.Fatalf("long_name: %s", body)
			}
		}
	}
	if len(made) != len(invalidKinds) {
		t.Fatalf("made %d of %d kinds", len(made), len(invalidKinds))
	}
}

// editDistance: Damerau-Levenshtein (optimal string alignment) over runes.
func editDistance(a, b string) int {
	x, y := []rune(a), []rune(b)
	d := make([][]int, len(x)+1)
	for i := range d {
		d[i] = make([]int, len(y)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(x); i++ {
		for j := 1; j <= len(y); j++ {
			cost := 1
			if x[i-1] == y[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && x[i-1] == y[j-2] && x[i-2] == y[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(x)][len(y)]
}

func TestTermClasses(t *testing.T) {
	w := dataWords()
	tm := &terms{r: rand.New(rand.NewPCG(1, 3)), words: w}
	counts := make([]int, len(searchClasses))
	for i := 0; i < 4000; i++ {
		term, class := tm.next()
		counts[class]++
		switch searchClasses[class] {
		case "random":
			if n := len(term); n < 1 || n > 50 || strings.TrimSpace(term) == "" {
				t.Fatalf("random term %q", term)
			}
		case "typo":
			if term == "" {
				t.Fatal("empty typo")
			}
		}
	}
	for class, n := range counts {
		if n < 900 || n > 1100 {
			t.Fatalf("class %s drawn %d times of 4000", searchClasses[class], n)
		}
	}
	for _, word := range append(w.common, "ll", "Bo", "Lee", "Nguyễn") {
		for i := 0; i < 20; i++ {
			if typo := tm.typo(word); editDistance(word, typo) != 1 {
				t.Fatalf("typo %q of %q is not one edit away", typo, word)
			}
		}
	}
}

func TestHeaderFlag(t *testing.T) {
	var h headerList
	for _, good := range []string{"Authorization: Bearer wk_abc", "x-api-key:wk_abc", "X-Trace: a: b"} {
		if err := h.Set(good); err != nil {
			t.Fatalf("%q: %v", good, err)
		}
	}
	want := []header{{"Authorization", "Bearer wk_abc"}, {"X-Api-Key", "wk_abc"}, {"X-Trace", "a: b"}}
	if len(h) != len(want) {
		t.Fatalf("got %v", h)
	}
	for i := range want {
		if h[i] != want[i] {
			t.Fatalf("header %d: got %v, want %v", i, h[i], want[i])
		}
	}
	if s := h.String(); strings.Contains(s, "wk_abc") {
		t.Fatalf("String() shows a value: %q", s)
	}
	for _, bad := range []string{"no colon", ": empty name", "Bad Name: x", "X: a\r\nInjected: y"} {
		if err := h.Set(bad); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
}

func TestReadKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	if key, err := readKey(write("ok", "  wk_abc-_123 \nignored\n")); err != nil || key != "wk_abc-_123" {
		t.Fatalf("got %q, %v", key, err)
	}
	for name, text := range map[string]string{"empty": "\n", "spaced": "wk_a b\n", "control": "wk_\x01\n"} {
		if _, err := readKey(write(name, text)); err == nil {
			t.Fatalf("%s: accepted", name)
		}
	}
	if _, err := readKey(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing file accepted")
	}
}

// The key goes on writes only, unless -key-on-reads; -header on every request.
func TestKeyOnWrites(t *testing.T) {
	var mu sync.Mutex
	seen := map[string][2]string{} // method -> (Authorization, X-Trace)
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		seen[r.Method] = [2]string{r.Header.Get("Authorization"), r.Header.Get("X-Trace")}
	}))
	defer server.Close()
	auth := []header{{"Authorization", "Bearer wk_abc"}}
	for _, onReads := range []bool{false, true} {
		c := config{base: server.URL, surface: "api", timeout: 5 * time.Second, headers: headerList{{"X-Trace", "t"}}, writeAuth: auth}
		if onReads {
			c.readAuth = auth
		}
		g := newGenerator(c)
		for _, method := range []string{http.MethodPost, http.MethodGet} {
			if a := g.send(method, server.URL+"/x", []byte("{}")); a.err != nil || a.status != http.StatusOK {
				t.Fatalf("%s: %v %d", method, a.err, a.status)
			}
		}
		mu.Lock()
		post, get := seen[http.MethodPost], seen[http.MethodGet]
		mu.Unlock()
		wantRead := ""
		if onReads {
			wantRead = "Bearer wk_abc"
		}
		if post != [2]string{"Bearer wk_abc", "t"} {
			t.Fatalf("POST sent %q", post)
		}
		if get != [2]string{wantRead, "t"} {
			t.Fatalf("GET (key on reads %v) sent %q", onReads, get)
		}
		if names := strings.Join(headerNames(c), ","); strings.Contains(names, "wk_abc") {
			t.Fatalf("the summary's header names show the key: %q", names)
		}
	}
}

func TestShedAnswersAreCountedApartWithTheirLatency(t *testing.T) {
	s := newStream("searches", 10, 100)
	w := window{start: time.Unix(0, 0), holdFrom: time.Unix(0, 0), holdTo: time.Unix(100, 0)}
	due := time.Unix(1, 0)
	shed := answer{status: http.StatusServiceUnavailable, header: http.Header{"Retry-After": {"1"}}, done: due.Add(3 * time.Millisecond)}
	bare := answer{status: http.StatusServiceUnavailable, header: http.Header{}, done: due.Add(20 * time.Millisecond)}
	if !shedAnswer(s, due, shed) || !shedAnswer(s, due, bare) {
		t.Fatal("a 503 is a shed answer")
	}
	if shedAnswer(s, due, answer{status: http.StatusOK, done: due}) {
		t.Fatal("a 200 is not")
	}
	s.record(w, due, due.Add(50*time.Millisecond), true, "", false)  // good
	s.record(w, due, due.Add(150*time.Millisecond), true, "", false) // ok, past the good bound
	out := s.summary(w, 10*time.Second)
	if out.Shed != 2 || out.ShedWithoutRetry != 1 || out.ShedMax != 20 || out.Errors != 0 {
		t.Fatalf("shed %d, without Retry-After %d, max %v ms, errors %d", out.Shed, out.ShedWithoutRetry, out.ShedMax, out.Errors)
	}
	if out.ThroughputHold != 0.2 || out.GoodputHold != 0.1 {
		t.Fatalf("throughput %v, goodput %v per s", out.ThroughputHold, out.GoodputHold)
	}
}
