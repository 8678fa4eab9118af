package mount_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/dfnydus/dfnydus/test/internal/s3test"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// The same image served from a real S3-compatible server (versitygw) and from a local directory
// mounts and reads identically to its source tree.
func TestMountFromS3AndLocalDir(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	gw := s3test.Start(t)
	dir := testenv.TempDir(t)
	tree := filepath.Join(testenv.GoRoot(t), "src", "net")
	boot, blobs := filepath.Join(dir, "image.boot"), filepath.Join(dir, "blobs")
	testenv.MustRun(t, "build", "--log-level", "warn", "--bootstrap", boot, "--blob-dir", blobs, tree)

	ctx := context.Background()
	up, err := minio.New(gw.Host, &minio.Options{Creds: credentials.NewStaticV4(gw.Access, gw.Secret, ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := up.MakeBucket(ctx, "images", minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(blobs)
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(blobs, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := up.PutObject(ctx, "images", "nydus/blobs/"+e.Name(), bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("AWS_ACCESS_KEY_ID", gw.Access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", gw.Secret)
	want := testenv.Snapshot(t, tree)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"s3", []string{"--bootstrap", boot, "s3://images/nydus/blobs/?endpoint=http://" + gw.Host + "&region=us-east-1"}},
		{"local", []string{"--bootstrap", boot, "--blob-dir", blobs}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mp := filepath.Join(dir, "mnt-"+tc.name)
			m := startMount(t, filepath.Join(dir, "cache-"+tc.name), mp, append([]string{"--prefetch", "off"}, tc.args...)...)
			testenv.AssertSameTree(t, want, testenv.Snapshot(t, mp))
			if s := m.stat(t); s.Source != tc.name || s.BytesOnDemand == 0 {
				t.Errorf("stat: source %q, %d bytes on demand", s.Source, s.BytesOnDemand)
			}
			m.stop(t)
		})
	}
}
