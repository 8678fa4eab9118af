package tools_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"d7y.io/dragonfly/v2/pkg/idgen"
	"github.com/google/uuid"

	schedclient "github.com/dfnydus/dfnydus/scheduler-client"
)

// The product computes Dragonfly's ids itself (scheduler-client/ids.go) instead of importing
// pkg/idgen, which would pull the scheduler's module into its own. A task id that differs from
// the scheduler's by one byte splits every task between dfnydus and Rust peers, so these tests
// hold ours to the real package, at the version the scheduler is built from.

const blobURL = "https://registry.example.com/v2/library/app/blobs/sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

type urlInput struct {
	url         string
	pieceLength *uint64
	tag, app    string
	filtered    []string
	revision    string
}

func (in urlInput) String() string {
	pl := "nil"
	if in.pieceLength != nil {
		pl = fmt.Sprint(*in.pieceLength)
	}
	return fmt.Sprintf("url %q, piece length %s, tag %q, application %q, filtered %q, revision %q",
		in.url, pl, in.tag, in.app, in.filtered, in.revision)
}

func pl(n uint64) *uint64 { return &n }

// fixedInputs are the inputs of scheduler-client's golden table, upstream's filter lists, and URLs
// net/url rewrites when it prints them again.
var fixedInputs = []urlInput{
	{url: blobURL},
	{url: blobURL, pieceLength: pl(4 << 20)},
	{url: blobURL, pieceLength: pl(0)},
	{url: blobURL, pieceLength: pl(1<<64 - 1)},
	{url: blobURL, tag: "v1"},
	{url: blobURL, app: "dfnydus"},
	{url: blobURL, pieceLength: pl(1 << 20), tag: "v1", app: "dfnydus", revision: "main"},
	{url: "https://bucket.s3.amazonaws.com/obj?X-Amz-Signature=abc&z=1&X-Amz-Date=20240101&a=2", filtered: idgen.S3FilteredQueryParams},
	{url: "https://storage.googleapis.com/b/o?X-Goog-Signature=1&X-Goog-Date=2&alt=media", filtered: idgen.GcsFilteredQueryParams},
	{url: "https://example.com/f?a=1&a=0&ns=k8s.io", filtered: idgen.DefaultFilteredQueryParams},
	{url: "https://example.com/f?a=1&a=0&ns=k8s.io", filtered: []string{"ns"}},
	{url: "https://example.com/file?b=2&a=1", filtered: []string{"c"}},
	{url: "https://example.com/file?b=2&a=1"},
	{url: "https://example.com/file?X-Amz-Signature=abc", filtered: idgen.S3FilteredQueryParams},
	{url: "https://example.com/file?x-amz-signature=abc", filtered: idgen.S3FilteredQueryParams},
	{url: "http://[::1:bad/file", filtered: []string{"a"}},
	{url: "http://[::1:bad/file"},
	{url: ""},
	{url: "", filtered: []string{"a"}},
	{url: "https://example.com/a%20b/c d?q=1&r=x y#frag", filtered: []string{"q"}},
	{url: "https://example.com/f?a=1;b=2&c=%zz&d=3", filtered: []string{"x"}},
	{url: "https://user:pass@example.com:8443/p/../q?%41=1&A=2", filtered: []string{"A"}},
	{url: "relative/path?x=1&y", filtered: []string{"y"}},
	{url: "https://example.com/f?a=1", filtered: []string{""}},
	{url: "https://例え.jp/パス?キー=値&k=v", filtered: []string{"k"}},
	{url: "https://example.com/f?", filtered: []string{"k"}},
	{url: "https://example.com/f#only-a-fragment", filtered: []string{"k"}},
}

func TestTaskIDByURLAgreesWithIdgen(t *testing.T) {
	for _, in := range fixedInputs {
		checkTaskID(t, in)
	}
	// Random inputs from the pieces that matter to the format: characters net/url escapes or
	// refuses, repeated and filtered parameter names, empty fields. The seed is logged so that a
	// failure can be replayed.
	seed := uint64(time.Now().UnixNano())
	r := rand.New(rand.NewPCG(seed, 0))
	for range 5000 {
		checkTaskID(t, randomInput(r))
		if t.Failed() {
			t.Fatalf("random inputs from seed %d disagree", seed)
		}
	}
}

// FuzzTaskIDByURL lets `go test -fuzz` look for an input on which the two disagree; filters are
// one string split at "&", as Dragonfly's config and API carry them.
func FuzzTaskIDByURL(f *testing.F) {
	for _, in := range fixedInputs {
		var n uint64
		if in.pieceLength != nil {
			n = *in.pieceLength
		}
		f.Add(in.url, n, in.pieceLength != nil, in.tag, in.app, strings.Join(in.filtered, "&"), in.revision)
	}
	f.Fuzz(func(t *testing.T, url string, n uint64, hasPieceLength bool, tag, app, filtered, revision string) {
		in := urlInput{url: url, tag: tag, app: app, revision: revision}
		if hasPieceLength {
			in.pieceLength = &n
		}
		if filtered != "" {
			in.filtered = idgen.ParseFilteredQueryParams(filtered)
		}
		checkTaskID(t, in)
	})
}

func checkTaskID(t *testing.T, in urlInput) {
	t.Helper()
	want := idgen.TaskIDV2ByURLBased(in.url, in.pieceLength, in.tag, in.app, in.filtered, in.revision)
	if got := schedclient.TaskIDByURL(in.url, in.pieceLength, in.tag, in.app, in.filtered, in.revision); got != want {
		t.Errorf("TaskIDByURL = %s, idgen.TaskIDV2ByURLBased = %s; %v", got, want, in)
	}
	// The shorthands cover the inputs they can express (no piece length is 0 to them).
	if in.revision != "" || in.pieceLength != nil && *in.pieceLength == 0 {
		return
	}
	var n uint64
	if in.pieceLength != nil {
		n = *in.pieceLength
	}
	if got := schedclient.TaskIDFor(in.url, n, in.tag, in.app, in.filtered); got != want {
		t.Errorf("TaskIDFor = %s, idgen.TaskIDV2ByURLBased = %s; %v", got, want, in)
	}
	if in.tag == "" && in.app == "" && len(in.filtered) == 0 {
		if got := schedclient.TaskID(in.url, n); got != want {
			t.Errorf("TaskID = %s, idgen.TaskIDV2ByURLBased = %s; %v", got, want, in)
		}
	}
}

var (
	schemes    = []string{"https://", "http://", "HTTP://", "s3://", "", "://", "h t://"}
	hosts      = []string{"registry.example.com", "127.0.0.1:5000", "[::1]:443", "[::1", "user:p%40ss@h", "例え.jp", "h:port", ""}
	paramNames = []string{"a", "b", "A", "ns", "X-Amz-Signature", "x-amz-signature", "Expires", "%41", "k k", "", "é"}
	oddChars   = []rune{'a', 'z', '0', '/', '?', '#', '&', '=', ';', '%', ' ', '+', ':', '@', '[', ']', '\\', '"', '\'', '\x00', '\x7f', 'é', '界', '\t'}
)

func randomInput(r *rand.Rand) urlInput {
	pick := func(s []string) string { return s[r.IntN(len(s))] }
	odd := func(max int) string {
		var b strings.Builder
		for range r.IntN(max + 1) {
			b.WriteRune(oddChars[r.IntN(len(oddChars))])
		}
		return b.String()
	}
	var u strings.Builder
	u.WriteString(pick(schemes) + pick(hosts) + "/v2/" + odd(6) + "/blobs/sha256:" + odd(3))
	if r.IntN(4) > 0 {
		u.WriteByte('?')
		for i := range r.IntN(5) {
			if i > 0 {
				u.WriteString(pick([]string{"&", "&", ";", "&&"}))
			}
			u.WriteString(pick(paramNames))
			if r.IntN(5) > 0 {
				u.WriteString("=" + odd(4))
			}
		}
	}
	if r.IntN(5) == 0 {
		u.WriteString("#" + odd(4))
	}
	in := urlInput{url: u.String()}
	switch r.IntN(4) {
	case 0:
	case 1:
		in.filtered = idgen.DefaultFilteredQueryParams
	default:
		for range r.IntN(4) {
			in.filtered = append(in.filtered, pick(paramNames))
		}
	}
	switch r.IntN(4) {
	case 0:
		in.pieceLength = pl(0)
	case 1:
		in.pieceLength = pl(r.Uint64())
	case 2:
		in.pieceLength = pl(uint64(1) << (20 + r.IntN(7)))
	}
	if r.IntN(3) == 0 {
		in.tag = odd(3)
	}
	if r.IntN(3) == 0 {
		in.app = odd(3)
	}
	if r.IntN(3) == 0 {
		in.revision = odd(3)
	}
	return in
}

func TestTaskIDByContentAgreesWithIdgen(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	r := rand.New(rand.NewPCG(seed, 1))
	contents := []string{"", "hello", blobURL + "STANDARD", "\x00\xff"}
	for range 200 {
		b := make([]byte, r.IntN(300))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		contents = append(contents, string(b))
	}
	for _, c := range contents {
		if got, want := schedclient.TaskIDByContent(c), idgen.TaskIDV2ByContent(c); got != want {
			t.Fatalf("TaskIDByContent(%q) = %s, idgen.TaskIDV2ByContent = %s (seed %d)", c, got, want, seed)
		}
	}
}

func TestHostIDAgreesWithIdgen(t *testing.T) {
	for _, ip := range []string{"10.0.0.1", "::1", "", "a-b"} {
		for _, hostname := range []string{"node-a", "", "seed", "host.example.com"} {
			for _, seed := range []bool{false, true} {
				if got, want := schedclient.HostID(ip, hostname, seed), idgen.HostIDV2(ip, hostname, seed); got != want {
					t.Errorf("HostID(%q, %q, %v) = %q, idgen.HostIDV2 = %q", ip, hostname, seed, got, want)
				}
			}
		}
	}
}

// TestPeerIDIsIdgensForm: idgen's peer ids are random UUIDs, so ours must be of the same form,
// which is what google/uuid (idgen's generator) parses as a version 4, RFC 4122 UUID in canonical
// text.
func TestPeerIDIsIdgensForm(t *testing.T) {
	for _, id := range []string{idgen.PeerIDV2(), schedclient.PeerID(), schedclient.PeerID()} {
		u, err := uuid.Parse(id)
		if err != nil {
			t.Fatalf("peer id %q: %v", id, err)
		}
		if u.Version() != 4 || u.Variant() != uuid.RFC4122 || u.String() != id {
			t.Errorf("peer id %q: version %d, variant %v, canonical %q; want version 4, RFC4122, itself", id, u.Version(), u.Variant(), u.String())
		}
	}
}
