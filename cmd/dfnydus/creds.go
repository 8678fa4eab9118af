package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"go.uber.org/zap"
)

// credsEnv names the environment variable holding USER:PASSWORD. Unlike argv, a process's
// environment is readable only by its owner (/proc/PID/environ is mode 0400).
const credsEnv = "DFNYDUS_CREDS"

// credsFlags are the ways to give registry credentials. --creds stays for compatibility, but its
// value sits in /proc/PID/cmdline, readable by every user, for the whole life of a mount.
type credsFlags struct {
	inline string
	file   string
	stdin  bool

	in       io.Reader // os.Stdin unless a test sets it
	resolved bool
	user     string
	pass     string
}

func (f *credsFlags) add(fl *pflag.FlagSet) {
	fl.StringVar(&f.inline, "creds", "", "USER:PASSWORD for the registry; visible to other users in the process list, prefer --creds-file, --creds-stdin or $"+credsEnv)
	fl.StringVar(&f.file, "creds-file", "", "read USER:PASSWORD from the first line of FILE, which must not be readable by group or others")
	fl.BoolVar(&f.stdin, "creds-stdin", false, "read USER:PASSWORD from the first line of standard input")
}

// get returns the credentials from whichever source was given (at most one flag; $DFNYDUS_CREDS
// when none), or empty strings when there are none. It reads a file or stdin once.
func (f *credsFlags) get(log *zap.Logger) (user, pass string, err error) {
	if f.resolved {
		return f.user, f.pass, nil
	}
	n := 0
	for _, set := range []bool{f.inline != "", f.file != "", f.stdin} {
		if set {
			n++
		}
	}
	if n > 1 {
		return "", "", errors.New("give at most one of --creds, --creds-file and --creds-stdin")
	}
	var line, from string
	switch {
	case f.inline != "":
		if log != nil {
			log.Warn("--creds puts the password in the process's command line, which every user on this host can read; use --creds-file, --creds-stdin or $" + credsEnv)
		}
		line, from = f.inline, "--creds"
	case f.file != "":
		if line, err = readCredsFile(f.file); err != nil {
			return "", "", err
		}
		from = "--creds-file " + f.file
	case f.stdin:
		in := f.in
		if in == nil {
			in = os.Stdin
		}
		if line, err = firstLine(in); err != nil {
			return "", "", fmt.Errorf("--creds-stdin: %w", err)
		}
		from = "--creds-stdin"
	default:
		line, from = os.Getenv(credsEnv), "$"+credsEnv
	}
	if line != "" {
		if user, pass, err = parseCreds(line); err != nil {
			return "", "", fmt.Errorf("%s: %w", from, err)
		}
	}
	f.user, f.pass, f.resolved = user, pass, true
	return user, pass, nil
}

// parseCreds splits USER:PASSWORD (the password may contain colons).
func parseCreds(s string) (user, pass string, err error) {
	user, pass, ok := strings.Cut(s, ":")
	if !ok || user == "" {
		return "", "", errors.New("want USER:PASSWORD")
	}
	return user, pass, nil
}

// readCredsFile returns the first line of the credentials file at p. A file others can read leaks
// the password as surely as the command line does, so it is refused rather than used.
func readCredsFile(p string) (string, error) {
	fh, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("--creds-file: %w", err)
	}
	defer fh.Close()
	fi, err := fh.Stat() // of the opened file, so a swapped path cannot pass the check
	if err != nil {
		return "", fmt.Errorf("--creds-file: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("--creds-file %s has mode %#o: group or others can read the password; chmod 600 it", p, perm)
	}
	line, err := firstLine(fh)
	if err != nil {
		return "", fmt.Errorf("--creds-file %s: %w", p, err)
	}
	return line, nil
}

// firstLine reads the first line of r without its line ending; an empty input is an error.
func firstLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, 64<<10)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty; want USER:PASSWORD on the first line")
	}
	return line, nil
}
