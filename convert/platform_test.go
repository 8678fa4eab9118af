package convert

import (
	"testing"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dfnydus/dfnydus/registry"
)

func TestWantedPlatforms(t *testing.T) {
	tests := []struct {
		name  string
		asked []string // --platform values, parsed as the command line parses them
		entry ocispec.Platform
		want  bool
	}{
		{"nothing asked: every platform", nil, platforms.MustParse("linux/s390x"), true},
		{"the same platform", []string{"linux/amd64"}, ocispec.Platform{OS: "linux", Architecture: "amd64"}, true},
		{"another architecture", []string{"linux/amd64"}, ocispec.Platform{OS: "linux", Architecture: "arm64"}, false},
		{"another OS", []string{"linux/amd64"}, ocispec.Platform{OS: "windows", Architecture: "amd64"}, false},
		{"an alias asked for", []string{"linux/x86_64"}, ocispec.Platform{OS: "linux", Architecture: "amd64"}, true},
		{"an alias in the index", []string{"linux/arm64"}, ocispec.Platform{OS: "linux", Architecture: "aarch64"}, true},
		{"no variant asked: arm v6 too", []string{"linux/arm"}, ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}, true},
		{"no variant asked: arm v7 too", []string{"linux/arm"}, ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, true},
		{"no variant asked: arm64/v8 too", []string{"linux/arm64"}, ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, true},
		{"no variant asked: amd64/v3 too", []string{"linux/amd64"}, ocispec.Platform{OS: "linux", Architecture: "amd64", Variant: "v3"}, true},
		{"a variant asked: only that one", []string{"linux/arm/v7"}, ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}, false},
		{"a variant asked, in another spelling", []string{"linux/arm/7"}, ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, true},
		{"not what a host of the asked platform would also run", []string{"linux/amd64"}, ocispec.Platform{OS: "linux", Architecture: "386"}, false},
		{"one of several", []string{"linux/amd64", "linux/arm64"}, ocispec.Platform{OS: "linux", Architecture: "arm64"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cv := &converter{}
			for _, s := range tt.asked {
				p, err := registry.ParsePlatform(s)
				if err != nil {
					t.Fatal(err)
				}
				cv.opts.Platforms = append(cv.opts.Platforms, p)
			}
			if got := cv.wanted(tt.entry); got != tt.want {
				t.Errorf("asked %v, wanted(%s) = %v, want %v", tt.asked, platforms.Format(tt.entry), got, tt.want)
			}
		})
	}
}
