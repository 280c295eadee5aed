// Command warriors-loadgen: a mixed, open-loop load profile against the warriors platform.
//
// Three streams run at once, each ramping linearly from 0 to its rate over -ramp, then
// holding it for -hold:
//
//   - creations: POSTs of varied warriors, about 1 in 10 (-invalid) invalid in a varied
//     way, which must be refused with 400 or 422;
//   - follow-ups: each accepted creation's Location, fetched 1-30 ms after the answer,
//     must answer 200 with the same name (anything else is a Location miss);
//   - searches: terms in equal parts common, rare, one-letter typos and random letters.
//
// Open loop: every request is sent at its scheduled time whatever the latency of the
// others, and its latency is measured from that scheduled time (no coordinated omission).
// In-flight requests are capped only by -max-in-flight (default 5,000); a send skipped by
// the cap counts as an error. The summary is printed as JSON and written to -out.
//
// Writes need an API key with the writer role: -key-file PATH sends the key in that file
// as `Authorization: Bearer KEY` on the creations (and with -key-on-reads on the
// follow-ups and searches too; by default they go without, as anonymous readers do).
// -header 'Name: value' (repeatable) adds a header to every request. Header values are
// never printed nor written to the summary, only their names.
//
// Standard library only: go build -o warriors-loadgen .
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type config struct {
	base        string
	surface     string
	createRate  float64
	searchRate  float64
	ramp        time.Duration
	hold        time.Duration
	timeout     time.Duration
	seed        uint64
	out         string
	maxInFlight int64
	invalid     float64
	progress    time.Duration
	sample      int
	goodMs      float64
	headers     headerList // on every request (-header)
	keyFile     string
	keyOnReads  bool
	writeAuth   []header // the key's Authorization on writes
	readAuth    []header // and on reads, with -key-on-reads
}

type header struct{ name, value string }

// headerList: the repeatable -header flag, `Name: value` each.
type headerList []header

func (h *headerList) String() string { return strings.Join(h.names(), ", ") } // names only: values may be secrets

func (h *headerList) names() []string {
	var names []string
	for _, x := range *h {
		names = append(names, x.name)
	}
	return names
}

func (h *headerList) Set(text string) error {
	name, value, found := strings.Cut(text, ":")
	name, value = strings.TrimSpace(name), strings.TrimSpace(value)
	if !found || !validHeaderName(name) {
		return errors.New("want 'Name: value', a header name of letters, digits and -")
	}
	if strings.ContainsAny(value, "\r\n") {
		return errors.New("a header value cannot hold a line break")
	}
	*h = append(*h, header{http.CanonicalHeaderKey(name), value})
	return nil
}

func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// readKey: the API key in `path`, its first line without spaces around it.
func readKey(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	key, _, _ := strings.Cut(string(data), "\n")
	key = strings.TrimSpace(key)
	if key == "" {
		return "", fmt.Errorf("%s holds no key", path)
	}
	for _, r := range key {
		if r < 0x21 || r > 0x7e {
			return "", fmt.Errorf("%s holds something that is not a key (a space or a control character)", path)
		}
	}
	return key, nil
}

func parseFlags() config {
	var c config
	flag.StringVar(&c.base, "base", "http://127.0.0.1:8000", "base URL of the platform")
	flag.StringVar(&c.surface, "surface", "api", "api (/api/v1/...) or compat (/warrior, /counting-warriors)")
	flag.Float64Var(&c.createRate, "create-rate", 100, "creations per second once ramped up (0: none)")
	flag.Float64Var(&c.searchRate, "search-rate", 100, "searches per second once ramped up (0: none)")
	flag.DurationVar(&c.ramp, "ramp", 10*time.Second, "linear ramp from 0 to the rates")
	flag.DurationVar(&c.hold, "hold", 30*time.Second, "how long the rates are held after the ramp")
	flag.DurationVar(&c.timeout, "timeout", 10*time.Second, "per-request timeout (a time-out is an error)")
	flag.Uint64Var(&c.seed, "seed", 0, "seed of every payload and term choice (0: a random one, printed)")
	flag.StringVar(&c.out, "out", "", "also write the JSON summary to this file")
	flag.Int64Var(&c.maxInFlight, "max-in-flight", 5000, "requests in flight at most; a send over it is skipped (an error)")
	flag.Float64Var(&c.invalid, "invalid", 0.1, "share of invalid creations")
	flag.DurationVar(&c.progress, "progress", 5*time.Second, "progress line on stderr every so often (0: none)")
	flag.Float64Var(&c.goodMs, "good-ms", 100, "an answer within this many ms counts toward the goodput")
	flag.IntVar(&c.sample, "sample", 0, "print this many creation bodies and search terms (from -seed) and exit")
	flag.Var(&c.headers, "header", "`Name: value` added to every request (repeatable)")
	flag.StringVar(&c.keyFile, "key-file", "", "a `file` holding an API key (writer role), sent as 'Authorization: Bearer KEY' on creations")
	flag.BoolVar(&c.keyOnReads, "key-on-reads", false, "send -key-file's key on the follow-ups and searches too")
	flag.Parse()
	if c.surface != "api" && c.surface != "compat" {
		fail("-surface must be api or compat")
	}
	if c.createRate < 0 || c.searchRate < 0 || c.ramp < 0 || c.hold < 0 || c.ramp+c.hold <= 0 {
		fail("rates and durations must be positive")
	}
	if c.keyFile != "" {
		for _, h := range c.headers {
			if h.name == "Authorization" || h.name == "X-Api-Key" {
				fail("-key-file and -header " + h.name + " both send a key: give one")
			}
		}
		key, err := readKey(c.keyFile)
		if err != nil {
			fail("-key-file: " + err.Error())
		}
		c.writeAuth = []header{{"Authorization", "Bearer " + key}}
		if c.keyOnReads {
			c.readAuth = c.writeAuth
		}
	} else if c.keyOnReads {
		fail("-key-on-reads needs -key-file")
	}
	if c.seed == 0 {
		c.seed = uint64(time.Now().UnixNano())
	}
	c.base = strings.TrimRight(c.base, "/")
	return c
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, "warriors-loadgen:", message)
	os.Exit(2)
}

// The surfaces' routes and the status of an accepted creation.
type surface struct {
	create   string
	accepted int
	search   func(term string) string
}

func surfaceOf(c config) surface {
	if c.surface == "compat" {
		return surface{
			create:   c.base + "/warrior",
			accepted: http.StatusCreated,
			search:   func(t string) string { return c.base + "/warrior?t=" + url.QueryEscape(t) },
		}
	}
	return surface{
		create:   c.base + "/api/v1/commands/warriors",
		accepted: http.StatusAccepted,
		search:   func(t string) string { return c.base + "/api/v1/queries/warriors?term=" + url.QueryEscape(t) },
	}
}

// schedule: the offset of the k-th send (from 0) of a stream ramping linearly from 0 to
// `rate` over `ramp` (k+1 sends due by t: rate*t^2/(2*ramp)), then holding it for `hold`.
func schedule(rate float64, ramp, hold time.Duration) func(k int) (time.Duration, bool) {
	r, h := ramp.Seconds(), hold.Seconds()
	inRamp := rate * r / 2
	return func(k int) (time.Duration, bool) {
		if rate <= 0 {
			return 0, false
		}
		n := float64(k + 1)
		var at float64
		if n <= inRamp {
			at = math.Sqrt(2 * n * r / rate)
		} else {
			at = r + (n-inRamp)/rate
		}
		if at > r+h {
			return 0, false
		}
		return time.Duration(at * float64(time.Second)), true
	}
}

type generator struct {
	cfg      config
	surface  surface
	client   *http.Client
	base     *url.URL
	win      window
	wg       sync.WaitGroup
	inFlight atomic.Int64
	peak     atomic.Int64
	accepted atomic.Int64

	creations, locations, searches *stream
	classes                        []*stream
}

func newGenerator(c config) *generator {
	transport := &http.Transport{
		Proxy:               nil, // loopback: never through a proxy from the environment
		DialContext:         (&net.Dialer{Timeout: c.timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0, // no overall limit
		MaxIdleConnsPerHost: 2000,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	base, err := url.Parse(c.base)
	if err != nil {
		fail("bad -base: " + err.Error())
	}
	g := &generator{
		cfg:     c,
		surface: surfaceOf(c),
		client: &http.Client{
			Transport:     transport,
			Timeout:       c.timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		base:      base,
		creations: newStream("creations", c.createRate, c.goodMs),
		locations: newStream("locations", 0, c.goodMs),
		searches:  newStream("searches", c.searchRate, c.goodMs),
	}
	for _, class := range searchClasses {
		g.classes = append(g.classes, newStream("searches/"+class, c.searchRate/float64(len(searchClasses)), c.goodMs))
	}
	return g
}

// acquire a slot for a send, or false when the cap is reached (the send is skipped).
func (g *generator) acquire() bool {
	n := g.inFlight.Add(1)
	if n > g.cfg.maxInFlight {
		g.inFlight.Add(-1)
		return false
	}
	for {
		peak := g.peak.Load()
		if n <= peak || g.peak.CompareAndSwap(peak, n) {
			return true
		}
	}
}

func (g *generator) release() { g.inFlight.Add(-1) }

type answer struct {
	status int
	header http.Header
	body   []byte
	done   time.Time
	err    error
}

func (g *generator) send(method, target string, body []byte) answer {
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, target, reader)
	if err != nil {
		return answer{err: err, done: time.Now()}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, h := range g.cfg.headers {
		if h.name == "Host" {
			req.Host = h.value // Go sends req.Host, not a Host header
		} else {
			req.Header.Add(h.name, h.value)
		}
	}
	auth := g.cfg.readAuth
	if method != http.MethodGet && method != http.MethodHead {
		auth = g.cfg.writeAuth
	}
	for _, h := range auth {
		req.Header.Set(h.name, h.value)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return answer{err: err, done: time.Now()}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return answer{status: resp.StatusCode, header: resp.Header, body: data, done: time.Now(), err: err}
}

// errorKind names a transport failure.
func errorKind(err error) string {
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection_reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	default:
		return "transport"
	}
}

type creation struct {
	body    []byte
	name    string // of a valid body
	invalid string // the kind of an invalid body, else ""
	delay   time.Duration
}

// shedAnswer: true (and recorded) if the answer is a 503, admission control's "at capacity".
func shedAnswer(s *stream, due time.Time, a answer) bool {
	if a.err != nil || a.status != http.StatusServiceUnavailable {
		return false
	}
	s.recordShed(due, a.done, a.header.Get("Retry-After") != "")
	return true
}

func (g *generator) create(due time.Time, c creation) {
	a := g.send(http.MethodPost, g.surface.create, c.body)
	if a.status >= 200 && a.status < 300 { // stored, even if its body is then lost
		g.accepted.Add(1)
	}
	if shedAnswer(g.creations, due, a) {
		return
	}
	if a.err != nil {
		g.creations.record(g.win, due, a.done, false, errorKind(a.err), false)
		return
	}
	if c.invalid != "" {
		ok := a.status == http.StatusBadRequest || a.status == http.StatusUnprocessableEntity
		g.creations.record(g.win, due, a.done, ok, fmt.Sprintf("invalid %s: status %d", c.invalid, a.status), false)
		return
	}
	location := a.header.Get("Location")
	switch {
	case a.status != g.surface.accepted:
		g.creations.record(g.win, due, a.done, false, fmt.Sprintf("status %d", a.status), false)
	case location == "":
		g.creations.record(g.win, due, a.done, false, "no Location header", false)
	default:
		g.creations.record(g.win, due, a.done, true, "", false)
	}
	if a.status >= 200 && a.status < 300 && location != "" {
		g.followUp(a.done.Add(c.delay), location, c.name)
	}
}

// followUp: GET the Location at `due` (timers are precise enough at 1-30 ms).
func (g *generator) followUp(due time.Time, location, name string) {
	ref, err := url.Parse(location)
	if err != nil {
		g.locations.counted(false)
		g.locations.record(g.win, due, time.Time{}, false, "bad Location header", true)
		return
	}
	target := g.base.ResolveReference(ref).String()
	g.wg.Add(1)
	time.AfterFunc(time.Until(due), func() {
		defer g.wg.Done()
		g.locations.counted(false)
		if !g.acquire() {
			g.locations.record(g.win, due, time.Time{}, false, "skipped (in-flight cap)", true)
			return
		}
		defer g.release()
		a := g.send(http.MethodGet, target, nil)
		if shedAnswer(g.locations, due, a) {
			return
		}
		switch {
		case a.err != nil:
			g.locations.record(g.win, due, a.done, false, errorKind(a.err), true)
		case a.status != http.StatusOK:
			g.locations.record(g.win, due, a.done, false, fmt.Sprintf("status %d", a.status), true)
		default:
			var got struct {
				Name *string `json:"name"`
			}
			if json.Unmarshal(a.body, &got) != nil || got.Name == nil {
				g.locations.record(g.win, due, a.done, false, "body without a name", true)
			} else if *got.Name != name {
				g.locations.record(g.win, due, a.done, false, "another name", true)
			} else {
				g.locations.record(g.win, due, a.done, true, "", true)
			}
		}
	})
}

func (g *generator) search(due time.Time, term string, class int) {
	a := g.send(http.MethodGet, g.surface.search(term), nil)
	if shedAnswer(g.searches, due, a) {
		g.classes[class].recordShed(due, a.done, a.header.Get("Retry-After") != "")
		return
	}
	ok, kind := false, ""
	switch {
	case a.err != nil:
		kind = errorKind(a.err)
	case a.status != http.StatusOK:
		kind = fmt.Sprintf("status %d", a.status)
	default:
		ok = true
	}
	g.searches.record(g.win, due, a.done, ok, kind, false)
	g.classes[class].record(g.win, due, a.done, ok, kind, false)
}

// run a stream: prepare each request, sleep until its time, launch it. Returns how late
// each launch was (ms): the generator's own lag, which the latencies include.
func (g *generator) run(rate float64, prepare func() func(due time.Time), onSkip func(due time.Time)) []float64 {
	at := schedule(rate, g.cfg.ramp, g.cfg.hold)
	var lags []float64
	for k := 0; ; k++ {
		offset, more := at(k)
		if !more {
			return lags
		}
		launch := prepare()
		due := g.win.start.Add(offset)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		lags = append(lags, float64(time.Since(due))/float64(time.Millisecond))
		if !g.acquire() {
			onSkip(due)
			continue
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer g.release()
			launch(due)
		}()
	}
}

type summary struct {
	Tool              string                   `json:"tool"`
	Seed              uint64                   `json:"seed"`
	Surface           string                   `json:"surface"`
	Base              string                   `json:"base"`
	CreateRate        float64                  `json:"create_rate"`
	SearchRate        float64                  `json:"search_rate"`
	RampSeconds       float64                  `json:"ramp_s"`
	HoldSeconds       float64                  `json:"hold_s"`
	TimeoutSeconds    float64                  `json:"timeout_s"`
	InvalidShare      float64                  `json:"invalid_share"`
	MaxInFlight       int64                    `json:"max_in_flight"`
	PeakInFlight      int64                    `json:"peak_in_flight"`
	Started           string                   `json:"started"`
	DurationSeconds   float64                  `json:"duration_s"`
	AcceptedCreations int64                    `json:"accepted_creations"`
	CPUSeconds        float64                  `json:"cpu_s"`
	SendLag           lag                      `json:"send_lag"`
	Data              string                   `json:"data"`
	Headers           []string                 `json:"headers,omitempty"` // names only, never values
	Streams           map[string]streamSummary `json:"streams"`
}

// lag: how late the scheduled sends left (the generator's own delay, ms).
type lag struct {
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

func lagOf(samples []float64) lag {
	if len(samples) == 0 {
		return lag{}
	}
	sort.Float64s(samples)
	return lag{
		P50: round(percentile(samples, 0.5), 3), P99: round(percentile(samples, 0.99), 3),
		Max: round(samples[len(samples)-1], 3),
	}
}

func cpuSeconds() float64 {
	var usage syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &usage) != nil {
		return 0
	}
	seconds := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return round(seconds(usage.Utime)+seconds(usage.Stime), 3)
}

func (g *generator) progressLoop(stop <-chan struct{}) {
	if g.cfg.progress <= 0 {
		return
	}
	ticker := time.NewTicker(g.cfg.progress)
	defer ticker.Stop()
	line := func(s *stream) string {
		s.mu.Lock()
		defer s.mu.Unlock()
		bad := int64(0)
		for _, n := range s.errors {
			bad += n
		}
		for _, n := range s.misses {
			bad += n
		}
		return fmt.Sprintf("%s %d sent %d ok %d bad", s.name, s.sent, s.ok, bad)
	}
	for {
		select {
		case <-stop:
			return
		case now := <-ticker.C:
			fmt.Fprintf(os.Stderr, "[loadgen] %4.0fs  %s | %s | %s | in flight %d\n", now.Sub(g.win.start).Seconds(),
				line(g.creations), line(g.locations), line(g.searches), g.inFlight.Load())
		}
	}
}

func main() {
	cfg := parseFlags()
	g := newGenerator(cfg)

	payloads := newPayloads(rand.New(rand.NewPCG(cfg.seed, 1)))
	creationRand := rand.New(rand.NewPCG(cfg.seed, 2))
	terms := &terms{r: rand.New(rand.NewPCG(cfg.seed, 3)), words: dataWords()}
	if cfg.sample > 0 {
		printSample(cfg, payloads, creationRand, terms)
		return
	}
	fmt.Fprintf(os.Stderr, "[loadgen] seed %d, surface %s, %s; creations %.0f/s, searches %.0f/s, ramp %s, hold %s; headers: %s\n",
		cfg.seed, cfg.surface, cfg.base, cfg.createRate, cfg.searchRate, cfg.ramp, cfg.hold, describeHeaders(cfg))

	start := time.Now().Add(50 * time.Millisecond)
	g.win = window{start: start, holdFrom: start.Add(cfg.ramp), holdTo: start.Add(cfg.ramp + cfg.hold)}
	stop := make(chan struct{})
	go g.progressLoop(stop)

	var streams sync.WaitGroup
	var createLags, searchLags []float64
	streams.Add(2)
	go func() {
		defer streams.Done()
		createLags = g.run(cfg.createRate, func() func(time.Time) {
			var c creation
			if creationRand.Float64() < cfg.invalid {
				c.body, c.invalid = payloads.invalid()
			} else {
				c.body, c.name = payloads.valid()
			}
			c.delay = time.Millisecond + time.Duration(creationRand.Float64()*float64(29*time.Millisecond))
			g.creations.counted(c.invalid != "")
			return func(due time.Time) { g.create(due, c) }
		}, func(due time.Time) {
			g.creations.record(g.win, due, time.Time{}, false, "skipped (in-flight cap)", false)
		})
	}()
	go func() {
		defer streams.Done()
		var class int
		searchLags = g.run(cfg.searchRate, func() func(time.Time) {
			var term string
			term, class = terms.next()
			c := class
			g.searches.counted(false)
			g.classes[c].counted(false)
			return func(due time.Time) { g.search(due, term, c) }
		}, func(due time.Time) {
			g.searches.record(g.win, due, time.Time{}, false, "skipped (in-flight cap)", false)
			g.classes[class].record(g.win, due, time.Time{}, false, "skipped (in-flight cap)", false)
		})
	}()
	streams.Wait()
	g.wg.Wait()
	close(stop)
	ended := time.Now()

	out := summary{
		Tool: "warriors-loadgen", Seed: cfg.seed, Surface: cfg.surface, Base: cfg.base,
		CreateRate: cfg.createRate, SearchRate: cfg.searchRate,
		RampSeconds: cfg.ramp.Seconds(), HoldSeconds: cfg.hold.Seconds(), TimeoutSeconds: cfg.timeout.Seconds(),
		InvalidShare: cfg.invalid, MaxInFlight: cfg.maxInFlight, PeakInFlight: g.peak.Load(),
		Started: start.UTC().Format(time.RFC3339Nano), DurationSeconds: round(ended.Sub(start).Seconds(), 3),
		AcceptedCreations: g.accepted.Load(), CPUSeconds: cpuSeconds(), Data: describeData(),
		Headers: headerNames(cfg),
		SendLag: lagOf(append(createLags, searchLags...)),
		Streams: map[string]streamSummary{},
	}
	for _, s := range append([]*stream{g.creations, g.locations, g.searches}, g.classes...) {
		out.Streams[s.name] = s.summary(g.win, cfg.hold)
	}
	encoded, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		fail(err.Error())
	}
	fmt.Println(string(encoded))
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, append(encoded, '\n'), 0o644); err != nil {
			fail(err.Error())
		}
	}
}

// headerNames: the headers sent besides Content-Type, by name (values may be secrets).
func headerNames(c config) []string {
	names := c.headers.names()
	if len(c.writeAuth) > 0 {
		where := "creations"
		if len(c.readAuth) > 0 {
			where = "every request"
		}
		names = append(names, fmt.Sprintf("Authorization (-key-file, %s)", where))
	}
	return names
}

func describeHeaders(c config) string {
	if names := headerNames(c); len(names) > 0 {
		return strings.Join(names, ", ")
	}
	return "none"
}

// printSample: what -seed makes, without sending anything.
func printSample(cfg config, p *payloads, r *rand.Rand, t *terms) {
	fmt.Println(describeData())
	for i := 0; i < cfg.sample; i++ {
		if r.Float64() < cfg.invalid {
			body, kind := p.invalid()
			fmt.Printf("create (invalid %s): %s\n", kind, body)
		} else {
			body, _ := p.valid()
			fmt.Printf("create: %s\n", body)
		}
		r.Float64() // the follow-up delay, as in a run
	}
	for i := 0; i < cfg.sample; i++ {
		term, class := t.next()
		fmt.Printf("search (%s): %q -> %s\n", searchClasses[class], term, surfaceOf(cfg).search(term))
	}
}
