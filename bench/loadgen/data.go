package main

// The data set: names, skills, creation payloads (valid and invalid) and search terms.
// Every choice comes from a seeded generator, so a run is reproducible from its -seed.

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"time"
	"unicode"
)

//go:embed words.json
var wordsJSON []byte

// The word lists, one file shared with the Python tests and benchmarks (tests/dataset.py):
// first names; commonSurnames, drawn with a mild Zipf weight (rank r: 1/sqrt(r));
// rareSurnames, the long tail: weight rareWeight/j for the j-th (j from 1), well below the
// least common of commonSurnames, which the rare search class draws from; skills.
var firstNames, commonSurnames, rareSurnames, skills = loadWords()

func loadWords() (first, common, rare, skills []string) {
	var w struct {
		FirstNames     []string `json:"first_names"`
		CommonSurnames []string `json:"common_surnames"`
		RareSurnames   []string `json:"rare_surnames"`
		Skills         []string `json:"skills"`
	}
	if err := json.Unmarshal(wordsJSON, &w); err != nil {
		panic("words.json: " + err.Error())
	}
	return w.FirstNames, w.CommonSurnames, w.RareSurnames, w.Skills
}

const rareWeight = 0.03

// Search classes, in the order they are reported.
var searchClasses = []string{"common", "rare", "typo", "random"}

// words: the data set's words (first names, surnames and the words of skills).
type words struct {
	common []string // first names, common surnames, skill words
	rare   []string // the rare tail of the surnames
}

func dataWords() words {
	seen := map[string]bool{}
	var w words
	add := func(list *[]string, s string) {
		for _, part := range strings.Fields(s) {
			if !seen[part] {
				seen[part] = true
				*list = append(*list, part)
			}
		}
	}
	for _, s := range firstNames {
		add(&w.common, s)
	}
	for _, s := range commonSurnames {
		add(&w.common, s)
	}
	for _, s := range skills {
		add(&w.common, s)
	}
	for _, s := range rareSurnames {
		add(&w.rare, s)
	}
	return w
}

// weighted draws an index with the given weights (cumulative table, binary search).
type weighted struct{ cumulative []float64 }

func newWeighted(weights []float64) weighted {
	cumulative := make([]float64, len(weights))
	total := 0.0
	for i, w := range weights {
		total += w
		cumulative[i] = total
	}
	return weighted{cumulative}
}

func (w weighted) draw(r *rand.Rand) int {
	x := r.Float64() * w.cumulative[len(w.cumulative)-1]
	return sort.SearchFloat64s(w.cumulative, x)
}

// payloads makes creation bodies.
type payloads struct {
	r        *rand.Rand
	surnames []string
	weights  weighted
	today    time.Time
}

func newPayloads(r *rand.Rand) *payloads {
	surnames := append(append([]string{}, commonSurnames...), rareSurnames...)
	weights := make([]float64, 0, len(surnames))
	for rank := range commonSurnames {
		weights = append(weights, 1/math.Sqrt(float64(rank+1)))
	}
	for j := range rareSurnames {
		weights = append(weights, rareWeight/float64(j+1))
	}
	return &payloads{r: r, surnames: surnames, weights: newWeighted(weights), today: time.Now().UTC()}
}

type warrior struct {
	Name        string   `json:"name"`
	Dob         string   `json:"dob"`
	FightSkills []string `json:"fight_skills"`
}

func (p *payloads) name() string {
	first := firstNames[p.r.IntN(len(firstNames))]
	last := p.surnames[p.weights.draw(p.r)]
	switch p.r.IntN(10) {
	case 0: // a double first name
		return first + " " + firstNames[p.r.IntN(len(firstNames))] + " " + last
	case 1: // a double surname
		return first + " " + last + " " + p.surnames[p.weights.draw(p.r)]
	default:
		return first + " " + last
	}
}

func (p *payloads) dob() string {
	start := time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)
	end := time.Date(2010, 12, 31, 0, 0, 0, 0, time.UTC)
	days := int(end.Sub(start).Hours() / 24)
	return start.AddDate(0, 0, p.r.IntN(days+1)).Format("2006-01-02")
}

func (p *payloads) skills() []string {
	n := p.r.IntN(7) // 0-6
	picked := p.r.Perm(len(skills))[:n]
	out := make([]string, 0, n)
	for _, i := range picked {
		out = append(out, skills[i])
	}
	return out
}

// valid returns a valid body and the name it carries.
func (p *payloads) valid() ([]byte, string) {
	w := warrior{Name: p.name(), Dob: p.dob(), FightSkills: p.skills()}
	body, err := json.Marshal(w)
	if err != nil {
		panic(err)
	}
	return body, w.Name
}

// invalidKinds: each must be refused with 400 or 422. (Skills repeated but for case are
// not among them: the platform merges them into one skill, as its document allows.)
var invalidKinds = []string{
	"empty_name", "blank_name", "long_name", "bad_date", "word_date", "future_dob", "numeric_name",
	"skills_string", "long_skill", "malformed_json", "missing_dob",
}

// invalid returns a body that must be refused, and its kind.
func (p *payloads) invalid() ([]byte, string) {
	kind := invalidKinds[p.r.IntN(len(invalidKinds))]
	fields := map[string]any{"name": p.name(), "dob": p.dob(), "fight_skills": p.skills()}
	switch kind {
	case "empty_name":
		fields["name"] = ""
	case "blank_name":
		fields["name"] = strings.Repeat(" ", 1+p.r.IntN(5))
	case "long_name":
		fields["name"] = strings.Repeat("Takeshi", 20)[:101+p.r.IntN(20)] // no trailing space to trim
	case "bad_date":
		fields["dob"] = "1990-13-45"
	case "word_date":
		fields["dob"] = "yesterday"
	case "future_dob": // two days ahead at least: "today" anywhere on Earth still counts
		fields["dob"] = p.today.AddDate(0, 0, 2+p.r.IntN(3650)).Format("2006-01-02")
	case "numeric_name":
		fields["name"] = p.r.IntN(1_000_000)
	case "skills_string":
		fields["fight_skills"] = skills[p.r.IntN(len(skills))]
	case "long_skill":
		fields["fight_skills"] = []string{"Katana", strings.Repeat("Kendo", 11)[:51]}
	case "malformed_json":
		body, _ := json.Marshal(fields)
		return body[:len(body)/2], kind
	case "missing_dob":
		delete(fields, "dob")
	}
	body, err := json.Marshal(fields)
	if err != nil {
		panic(err)
	}
	return body, kind
}

// terms makes search terms, in equal parts of the four classes.
type terms struct {
	r     *rand.Rand
	words words
}

const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

func (t *terms) next() (string, int) {
	class := t.r.IntN(len(searchClasses))
	switch searchClasses[class] {
	case "common":
		return t.words.common[t.r.IntN(len(t.words.common))], class
	case "rare":
		return t.words.rare[t.r.IntN(len(t.words.rare))], class
	case "typo":
		return t.typo(t.words.common[t.r.IntN(len(t.words.common))]), class
	default: // 1-50 random letters and spaces, mixed case, at least one letter
		n := 1 + t.r.IntN(50)
		var b strings.Builder
		for i := 0; i < n; i++ {
			if t.r.IntN(6) == 0 {
				b.WriteByte(' ')
			} else {
				b.WriteByte(letters[t.r.IntN(len(letters))])
			}
		}
		term := []byte(b.String())
		if strings.TrimSpace(string(term)) == "" { // at least one letter: a blank term is no search
			term[t.r.IntN(len(term))] = letters[t.r.IntN(len(letters))]
		}
		return string(term), class
	}
}

// typo: one edit (substitute, delete, insert or transpose one letter) of a word.
func (t *terms) typo(word string) string {
	for {
		if typo := t.oneEdit(word); typo != word {
			return typo
		}
	}
}

func (t *terms) oneEdit(word string) string {
	runes := []rune(word)
	letter := rune('a' + t.r.IntN(26))
	if unicode.IsUpper(runes[0]) && t.r.IntN(2) == 0 {
		letter = unicode.ToUpper(letter)
	}
	op := t.r.IntN(4)
	if len(runes) < 3 { // too short to delete or transpose and stay a word
		op = 2 * t.r.IntN(2) // substitute or insert
	}
	i := t.r.IntN(len(runes))
	switch op {
	case 0: // substitute (with another letter)
		if unicode.ToLower(runes[i]) == unicode.ToLower(letter) {
			letter = rune('a' + (int(unicode.ToLower(letter)-'a')+1)%26)
		}
		runes[i] = letter
	case 1: // delete
		runes = append(runes[:i], runes[i+1:]...)
	case 2: // insert
		runes = append(runes[:i], append([]rune{letter}, runes[i:]...)...)
	default: // transpose two neighbours (the same letter twice: no change, drawn again)
		if i == len(runes)-1 {
			i--
		}
		runes[i], runes[i+1] = runes[i+1], runes[i]
	}
	return string(runes)
}

func describeData() string {
	w := dataWords()
	return fmt.Sprintf("%d first names, %d common + %d rare surnames, %d skills; search words: %d common, %d rare",
		len(firstNames), len(commonSurnames), len(rareSurnames), len(skills), len(w.common), len(w.rare))
}
