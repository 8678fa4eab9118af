package schedclient

import (
	"regexp"
	"testing"
)

// The expected ids in this file were computed with the real d7y.io/dragonfly/v2@v2.5.1
// pkg/idgen; tools/idgen_test.go keeps comparing the two on these and on random inputs.

const goldenBlobURL = "https://registry.example.com/v2/library/app/blobs/sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// s3Signing is the part of idgen.S3FilteredQueryParams a presigned S3 URL carries.
var s3Signing = []string{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token"}

func pieceLen(n uint64) *uint64 { return &n }

func TestTaskIDByURLGolden(t *testing.T) {
	for _, tc := range []struct {
		name        string
		url         string
		pieceLength *uint64
		tag, app    string
		filtered    []string
		revision    string
		want        string
	}{
		{name: "blob URL, no piece length", url: goldenBlobURL,
			want: "707c350d337ccfd93c1e0496cc49cfa084bd17f0fdf0007778f772d64d664046"},
		{name: "blob URL, 4 MiB pieces", url: goldenBlobURL, pieceLength: pieceLen(4 << 20),
			want: "d325048ff31637693a0c59190fbf9a7c8182e315bd3e558a409b87072b3588fb"},
		{name: "a piece length given as 0 is not the same as none", url: goldenBlobURL, pieceLength: pieceLen(0),
			want: "4284360ba8517afdde4e8f0ffa73d4f1fc09b0567569f10a9494b17546a1a2dc"},
		{name: "tag", url: goldenBlobURL, tag: "v1",
			want: "bcbcedb8449daf10255c5adb919c1182af7d119d190ff921ef4a3264f62b5889"},
		{name: "application", url: goldenBlobURL, app: "dfnydus",
			want: "dd2525ca9b07be5a04656f15749bd7fc866ef00b6835916957591665447d100b"},
		{name: "tag, application, revision and piece length", url: goldenBlobURL, pieceLength: pieceLen(1 << 20), tag: "v1", app: "dfnydus", revision: "main",
			want: "4afe9f6e4b7e58e394cae74aa1609ded14d37bb74f9404d78d061555864187c4"},
		{name: "presigned S3 URL: signing parameters dropped, the rest sorted",
			url:      "https://bucket.s3.amazonaws.com/obj?X-Amz-Signature=abc&z=1&X-Amz-Date=20240101&a=2",
			filtered: s3Signing,
			want:     "db683f013bdee53eb4e72f895d4fa6b0f64284201ae8dc3867dcb6ea4ac7893f"},
		{name: "a filter that matches nothing still sorts the query", url: "https://example.com/file?b=2&a=1", filtered: []string{"c"},
			want: "5b71ea3f84b9e4edb89b7e31126638a238625a2ab99cdc31bd7fb0a27c4570ef"},
		{name: "no filter: the query as given", url: "https://example.com/file?b=2&a=1",
			want: "54bad5bc14aff4e69847a62058e13853c6d1a50227d861e6473ee695e9d53017"},
		{name: "every parameter filtered: no question mark", url: "https://example.com/file?X-Amz-Signature=abc", filtered: s3Signing,
			want: "c21c1f0e6c3edd83a1090c42d74bf915a8d139cf32d2a7961c687a6ff0d72b0d"},
		{name: "filter names are case-sensitive", url: "https://example.com/file?x-amz-signature=abc", filtered: s3Signing,
			want: "522b1c206bf5ee7b3e249d45f4eca3949ada38fae9c473eb9a65cb31967e3148"},
		{name: "unparsable URL with a filter: the id of the empty URL", url: "http://[::1:bad/file", filtered: []string{"a"},
			want: "335fd665f279a081079a603243547268742c8e8d0af2f06b6a4b09b40c06e243"},
		{name: "empty URL", url: "",
			want: "335fd665f279a081079a603243547268742c8e8d0af2f06b6a4b09b40c06e243"},
		{name: "unparsable URL without a filter: hashed as given", url: "http://[::1:bad/file",
			want: "b699877d5413df50780043dd292d6286a7ac6ef7887511be90fa5ea82dde19d0"},
		{name: "filtering re-escapes the path and query, keeps the fragment", url: "https://example.com/a%20b/c d?q=1&r=x y#frag", filtered: []string{"q"},
			want: "2e65a63dc7a3867b90d2eba73b6fe2e25b8dbab600b19edefa6ba52493ddc14b"},
		{name: "repeated parameters keep their order", url: "https://example.com/f?a=1&a=0&ns=k8s.io", filtered: []string{"ns"},
			want: "365d763555ee1e72bdea067c6210e900a47a54eb463d2fd563142d89bc5e3c16"},
		{name: "malformed pairs are dropped when filtering", url: "https://example.com/f?a=1;b=2&c=%zz&d=3", filtered: []string{"x"},
			want: "1be2cc8904d087d911d6c00f1afcb803619fad522748e60e3bf37301a711c98b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := TaskIDByURL(tc.url, tc.pieceLength, tc.tag, tc.app, tc.filtered, tc.revision); got != tc.want {
				t.Errorf("TaskIDByURL = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestFilterQuery(t *testing.T) {
	for _, tc := range []struct {
		url      string
		filtered []string
		want     string
	}{
		{"https://bucket.s3.amazonaws.com/obj?X-Amz-Signature=abc&z=1&X-Amz-Date=20240101&a=2", s3Signing, "https://bucket.s3.amazonaws.com/obj?a=2&z=1"},
		{"https://example.com/file?b=2&a=1", []string{"c"}, "https://example.com/file?a=1&b=2"},
		{"https://example.com/file?b=2&a=1", nil, "https://example.com/file?b=2&a=1"},
		{"https://example.com/file?X-Amz-Signature=abc", s3Signing, "https://example.com/file"},
		{"http://[::1:bad/file", []string{"a"}, ""},
		{"http://[::1:bad/file", nil, "http://[::1:bad/file"},
		{"https://example.com/a%20b/c d?q=1&r=x y#frag", []string{"q"}, "https://example.com/a%20b/c%20d?r=x+y#frag"},
		{"https://example.com/f?a=1;b=2&c=%zz&d=3", []string{"x"}, "https://example.com/f?d=3"},
	} {
		if got := filterQuery(tc.url, tc.filtered); got != tc.want {
			t.Errorf("filterQuery(%q, %q) = %q, want %q", tc.url, tc.filtered, got, tc.want)
		}
	}
}

func TestTaskIDShorthands(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  string
		want string
	}{
		{"TaskID without a piece length", TaskID(goldenBlobURL, 0), "707c350d337ccfd93c1e0496cc49cfa084bd17f0fdf0007778f772d64d664046"},
		{"TaskID with 4 MiB pieces", TaskID(goldenBlobURL, 4<<20), "d325048ff31637693a0c59190fbf9a7c8182e315bd3e558a409b87072b3588fb"},
		{"TaskIDFor with a tag", TaskIDFor(goldenBlobURL, 0, "v1", "", nil), "bcbcedb8449daf10255c5adb919c1182af7d119d190ff921ef4a3264f62b5889"},
		{"TaskIDFor with a filter", TaskIDFor("https://example.com/file?b=2&a=1", 0, "", "", []string{"c"}), "5b71ea3f84b9e4edb89b7e31126638a238625a2ab99cdc31bd7fb0a27c4570ef"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, tc.got, tc.want)
		}
	}
}

func TestTaskIDByContentGolden(t *testing.T) {
	for _, tc := range []struct {
		content string
		want    string
	}{
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"hello", "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"},
		// The content a caller would send to claim a URL-based id: it collides with that id, which
		// is why peer/upload checks content ids against the URL.
		{goldenBlobURL + "STANDARD", "707c350d337ccfd93c1e0496cc49cfa084bd17f0fdf0007778f772d64d664046"},
	} {
		if got := TaskIDByContent(tc.content); got != tc.want {
			t.Errorf("TaskIDByContent(%q) = %s, want %s", tc.content, got, tc.want)
		}
	}
}

func TestHostID(t *testing.T) {
	for _, tc := range []struct {
		ip, hostname string
		seed         bool
		want         string
	}{
		{"10.0.0.1", "node-a", false, "10.0.0.1-node-a"},
		{"10.0.0.1", "node-a", true, "10.0.0.1-node-a-seed"},
		{"", "", true, "--seed"},
	} {
		if got := HostID(tc.ip, tc.hostname, tc.seed); got != tc.want {
			t.Errorf("HostID(%q, %q, %v) = %q, want %q", tc.ip, tc.hostname, tc.seed, got, tc.want)
		}
	}
}

// TestPeerIDIsARandomV4UUID checks the text form of github.com/google/uuid's NewString (lower-case
// hex, version nibble 4, variant bits 10) and that ids differ.
func TestPeerIDIsARandomV4UUID(t *testing.T) {
	form := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := PeerID()
		if !form.MatchString(id) {
			t.Fatalf("PeerID %q is not a version 4 UUID", id)
		}
		if seen[id] {
			t.Fatalf("PeerID %q repeated", id)
		}
		seen[id] = true
	}
}
