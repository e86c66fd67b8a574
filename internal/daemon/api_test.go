package daemon

import (
	"os"
	"path/filepath"
	"testing"
)

// TestInConfig: `guestnet apply FILES` while serve runs reloads the
// daemon's config only when the files are that config (or inside its
// folders), whatever the spelling of the paths.
func TestInConfig(t *testing.T) {
	dir := t.TempDir()
	etc := filepath.Join(dir, "etc")
	os.MkdirAll(etc, 0o755)
	for _, f := range []string{"etc/a.yaml", "other.yaml", "main.yaml"} {
		os.WriteFile(filepath.Join(dir, f), []byte("networks: {}\n"), 0o644)
	}
	os.Symlink(filepath.Join(dir, "main.yaml"), filepath.Join(dir, "link.yaml"))
	served := []string{etc, filepath.Join(dir, "main.yaml")}
	for _, c := range []struct {
		files []string
		want  bool
	}{
		{[]string{etc}, true},
		{[]string{filepath.Join(etc, "a.yaml")}, true},
		{[]string{filepath.Join(dir, "main.yaml"), etc}, true},
		{[]string{filepath.Join(dir, "link.yaml")}, true}, // a symbolic link to main.yaml
		{[]string{filepath.Join(etc, "..", "main.yaml")}, true},
		{[]string{filepath.Join(dir, "other.yaml")}, false},
		{[]string{etc, filepath.Join(dir, "other.yaml")}, false},
		{[]string{filepath.Join(etc, "..", "other.yaml")}, false},
		{[]string{dir}, false}, // the folder above the config
	} {
		if got := InConfig(c.files, served); got != c.want {
			t.Errorf("InConfig(%v) = %v, want %v", c.files, got, c.want)
		}
	}
}
