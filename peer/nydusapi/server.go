package nydusapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/internal/sockutil"
)

// Endpoints of the nydusd API v1 (nydus-snapshotter v0.16.1 pkg/daemon/client.go).
const (
	EndpointDaemon       = "/api/v1/daemon"
	EndpointMount        = "/api/v1/mount"
	EndpointMetrics      = "/api/v1/metrics"
	EndpointCacheMetrics = "/api/v1/metrics/blobcache"
	EndpointInflight     = "/api/v1/metrics/inflight"
	EndpointStart        = "/api/v1/daemon/start"
	EndpointExit         = "/api/v1/daemon/exit"
	EndpointSendFd       = "/api/v1/daemon/fuse/sendfd"
	EndpointTakeover     = "/api/v1/daemon/fuse/takeover"
	EndpointConfig       = "/api/v1/config"
)

// AuthUpdater is implemented by Mounters that can change an instance's registry credentials while
// it is mounted (PUT /api/v1/config).
type AuthUpdater interface {
	UpdateAuth(ctx context.Context, h Handle, username, password string) error
}

// ServerOptions configure a Server.
type ServerOptions struct {
	// ID is the daemon id the snapshotter gave with --id ("" when it gave none).
	ID      string
	Version BuildInfo
	Mounter Mounter
	// Root is the daemon's --mountpoint: shared-mode instances "/SNAP" are mounted at Root/SNAP.
	Root string
	Log  *zap.Logger
	// Exit is called once when the daemon should stop (PUT /api/v1/daemon/exit, or its dedicated
	// mount went away).
	Exit func()
}

// Server is the nydusd-compatible control plane of one daemon: its state and its mounted instances.
type Server struct {
	opts ServerOptions
	log  *zap.Logger

	mu     sync.Mutex
	state  string
	mounts map[string]*instance
	closed bool

	exitOnce sync.Once
	http     *http.Server
	ln       net.Listener
}

type instance struct {
	spec MountSpec
	h    Handle
}

// NewServer returns a Server in state INIT.
func NewServer(opts ServerOptions) *Server {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Exit == nil {
		opts.Exit = func() {}
	}
	s := &Server{opts: opts, log: opts.Log, state: StateInit, mounts: map[string]*instance{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+EndpointDaemon, s.getDaemon)
	mux.HandleFunc("POST "+EndpointMount, s.postMount)
	mux.HandleFunc("DELETE "+EndpointMount, s.deleteMount)
	mux.HandleFunc("GET "+EndpointMetrics, s.getFsMetrics)
	mux.HandleFunc("GET "+EndpointCacheMetrics, s.getCacheMetrics)
	mux.HandleFunc("GET "+EndpointInflight, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("PUT "+EndpointStart, s.putStart)
	mux.HandleFunc("PUT "+EndpointExit, s.putExit)
	mux.HandleFunc("PUT "+EndpointSendFd, s.unsupportedFailover)
	mux.HandleFunc("PUT "+EndpointTakeover, s.unsupportedFailover)
	mux.HandleFunc("PUT "+EndpointConfig, s.putConfig)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "NotFound", fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path))
	})
	// No read, write or idle timeouts: the snapshotter holds an idle connection open and takes its
	// hang-up for the daemon's death (pkg/manager/monitor.go).
	s.http = &http.Server{Handler: mux, ErrorLog: zap.NewStdLog(s.log)}
	return s
}

// Handler is the API's HTTP handler.
func (s *Server) Handler() http.Handler { return s.http.Handler }

// Listen creates the unix socket at path (replacing a stale one) and serves the API on it in the
// background.
func (s *Server) Listen(sock string) error {
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		return fmt.Errorf("api socket directory: %w", err)
	}
	// 0600 from the moment it exists: the API mounts and unmounts filesystems. A stale socket is
	// replaced atomically.
	ln, err := sockutil.Listen(sock)
	if err != nil {
		return fmt.Errorf("listen on api socket %s: %w", sock, err)
	}
	s.ln = ln
	go func() {
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("api server stopped", zap.Error(err))
		}
	}()
	return nil
}

// State is the daemon's state.
func (s *Server) State() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// SetState moves the daemon to state st.
func (s *Server) SetState(st string) {
	s.mu.Lock()
	prev := s.state
	s.state = st
	s.mu.Unlock()
	if prev != st {
		s.log.Info("daemon state", zap.String("from", prev), zap.String("to", st))
	}
}

// Mount mounts spec through the Mounter and registers it under spec.ID.
func (s *Server) Mount(ctx context.Context, spec MountSpec) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("daemon is shutting down")
	}
	if _, ok := s.mounts[spec.ID]; ok {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s is already mounted", errExists, spec.ID)
	}
	// Reserve the id while mounting so that a second request for it fails at once.
	s.mounts[spec.ID] = nil
	s.mu.Unlock()
	h, err := s.opts.Mounter.Mount(ctx, spec)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		delete(s.mounts, spec.ID)
		return err
	}
	inst := &instance{spec: spec, h: h}
	s.mounts[spec.ID] = inst
	go s.watch(inst)
	return nil
}

var (
	errExists   = errors.New("already exists")
	errNotFound = errors.New("not found")
)

// watch forgets an instance whose mount went away from outside; the dedicated mount going away
// ends the daemon, as nydusd's does when its FUSE session ends.
func (s *Server) watch(inst *instance) {
	<-inst.h.Done()
	s.mu.Lock()
	cur, ok := s.mounts[inst.spec.ID]
	gone := ok && cur == inst
	if gone {
		delete(s.mounts, inst.spec.ID)
	}
	closed := s.closed
	s.mu.Unlock()
	if gone && !closed {
		s.log.Warn("mount went away", zap.String("id", inst.spec.ID), zap.String("mountpoint", inst.spec.Mountpoint))
		if inst.spec.ID == "/" {
			s.requestExit()
		}
	}
}

// Unmount unmounts the instance registered under id.
func (s *Server) Unmount(ctx context.Context, id string) error {
	s.mu.Lock()
	inst, ok := s.mounts[id]
	if ok && inst != nil {
		delete(s.mounts, id)
	}
	s.mu.Unlock()
	if !ok || inst == nil {
		return fmt.Errorf("%w: no instance mounted at %s", errNotFound, id)
	}
	return s.opts.Mounter.Unmount(ctx, inst.h)
}

// Close stops the API and unmounts every instance (the daemon is going away).
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	insts := make([]*instance, 0, len(s.mounts))
	for id, inst := range s.mounts {
		if inst != nil {
			insts = append(insts, inst)
		}
		delete(s.mounts, id)
	}
	s.state = StateDestroyed
	s.mu.Unlock()
	var errs []error
	for _, inst := range insts {
		if err := s.opts.Mounter.Unmount(ctx, inst.h); err != nil {
			errs = append(errs, err)
		}
	}
	if s.ln != nil {
		// Close the listener and every connection, idle or not: the snapshotter sees the hang-up.
		errs = append(errs, s.http.Close())
	}
	return errors.Join(errs...)
}

func (s *Server) requestExit() { s.exitOnce.Do(s.opts.Exit) }

func (s *Server) getDaemon(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, DaemonInfo{ID: s.opts.ID, Version: s.opts.Version, State: s.State()})
}

// instanceID turns a request's mountpoint or id parameter into an instance id: "/SNAP".
func instanceID(v string) (string, error) {
	if v == "" {
		return "", errors.New("missing mountpoint")
	}
	clean := path.Clean("/" + v)
	if clean == "/" || clean != "/"+strings.TrimPrefix(v, "/") || strings.Contains(clean[1:], "/") {
		return "", fmt.Errorf("mountpoint %q: want /NAME", v)
	}
	return clean, nil
}

func (s *Server) postMount(w http.ResponseWriter, r *http.Request) {
	id, err := instanceID(r.URL.Query().Get("mountpoint"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "InvalidArgument", err.Error())
		return
	}
	if s.opts.Root == "" {
		writeError(w, http.StatusBadRequest, "InvalidArgument", "this daemon has no --mountpoint to mount instances under")
		return
	}
	var req MountRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "InvalidArgument", "decode mount request: "+err.Error())
		return
	}
	if req.FsType != "rafs" {
		writeError(w, http.StatusBadRequest, "Unsupported", fmt.Sprintf("fs_type %q: dfnydus mounts \"rafs\"", req.FsType))
		return
	}
	cfg, err := ParseConfig([]byte(req.Config))
	if err != nil {
		writeError(w, http.StatusBadRequest, codeOf(err), err.Error())
		return
	}
	for _, ig := range cfg.Ignored {
		s.log.Info("ignoring configuration setting", zap.String("id", id), zap.String("setting", ig))
	}
	spec := MountSpec{ID: id, Mountpoint: filepath.Join(s.opts.Root, id), Bootstrap: req.Source, Config: cfg}
	if err := s.Mount(r.Context(), spec); err != nil {
		s.log.Error("mount failed", zap.String("id", id), zap.Error(err))
		status := http.StatusInternalServerError
		if errors.Is(err, errExists) {
			status = http.StatusConflict
		} else if errors.Is(err, ErrNotRAFS) || errors.Is(err, ErrUnsupported) || errors.Is(err, ErrBadConfig) {
			status = http.StatusBadRequest
		}
		writeError(w, status, codeOf(err), err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) deleteMount(w http.ResponseWriter, r *http.Request) {
	id, err := instanceID(r.URL.Query().Get("mountpoint"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "InvalidArgument", err.Error())
		return
	}
	if err := s.Unmount(r.Context(), id); err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, errNotFound) {
			status = http.StatusNotFound
		}
		writeError(w, status, codeOf(err), err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// selected returns the instances a metrics request is about: the one named by ?id=, or all of
// them when there is no id (dedicated mode asks without one).
func (s *Server) selected(r *http.Request) ([]*instance, string, error) {
	id := r.URL.Query().Get("id")
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*instance
	for _, inst := range s.mounts {
		if inst != nil && (id == "" || inst.spec.ID == id || (len(s.mounts) == 1 && inst.spec.ID == "/")) {
			out = append(out, inst)
		}
	}
	if id != "" && len(out) == 0 {
		return nil, id, fmt.Errorf("%w: no instance %s", errNotFound, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].spec.ID < out[j].spec.ID })
	return out, id, nil
}

func (s *Server) getFsMetrics(w http.ResponseWriter, r *http.Request) {
	insts, id, err := s.selected(r)
	if err != nil {
		writeError(w, http.StatusNotFound, "NotFound", err.Error())
		return
	}
	m := FsMetrics{ID: id, BlockCountRead: make([]uint64, nBlockBuckets), FopHits: make([]uint64, nFops),
		FopErrors: make([]uint64, nFops), FopCumulativeLatencyTotal: make([]uint64, nFops), ReadLatencyDist: make([]uint64, nLatBuckets)}
	for _, inst := range insts {
		st := inst.h.Stats()
		m.FopHits[fopRead] += uint64(st.ChunkReads)
		m.FopErrors[fopRead] += uint64(st.Errors)
	}
	writeJSON(w, m)
}

func (s *Server) getCacheMetrics(w http.ResponseWriter, r *http.Request) {
	insts, id, err := s.selected(r)
	if err != nil {
		writeError(w, http.StatusNotFound, "NotFound", err.Error())
		return
	}
	m := CacheMetrics{ID: id, UnderlyingFiles: []string{}}
	ready := len(insts) > 0
	for _, inst := range insts {
		st := inst.h.Stats()
		m.StorePath = st.StorePath
		m.Total += uint64(st.ChunkReads)
		m.WholeHits += uint64(max(st.ChunkReads-st.Fetches, 0))
		m.EntriesCount += uint64(st.ChunksCached)
		m.PrefetchDataAmount += uint64(st.BytesPrefetched)
		m.PrefetchRequestsCount += uint64(st.PrefetchRequests)
		m.PrefetchWorkers += uint(st.PrefetchWorkers)
		if st.PrefetchStarted > 0 {
			m.PrefetchBeginTimeSecs, m.PrefetchBeginTimeMillis = uint64(st.PrefetchStarted/1000), uint64(st.PrefetchStarted%1000)
		}
		ready = ready && st.ChunksCached == st.Chunks
	}
	m.DataAllReady = ready
	writeJSON(w, m)
}

// putStart moves a daemon that has mounted (READY) to RUNNING; nydusd's own start-up does this by
// itself unless it was started with --upgrade.
func (s *Server) putStart(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	switch st {
	case StateRunning:
	case StateReady:
		s.SetState(StateRunning)
	default:
		writeError(w, http.StatusConflict, "InvalidState", fmt.Sprintf("cannot start a daemon in state %s", st))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) putExit(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusNoContent)
	go s.requestExit()
}

// unsupportedFailover answers the FUSE fd hand-over endpoints: dfnydus cannot yet resume another
// process's FUSE session (see docs/containers.md), so it tells the snapshotter plainly.
func (s *Server) unsupportedFailover(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotImplemented, "Unsupported",
		r.URL.Path+": dfnydus does not hand over FUSE sessions; use recover_policy \"restart\"")
}

// putConfig updates an instance's registry credentials: body {"registry_auth": base64(user:pass)}
// (pkg/daemon/daemon.go UpdateAuthConfig upstream).
func (s *Server) putConfig(w http.ResponseWriter, r *http.Request) {
	var body map[string]string
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "InvalidArgument", "decode config update: "+err.Error())
		return
	}
	auth, ok := body["registry_auth"]
	if !ok {
		writeError(w, http.StatusBadRequest, "InvalidArgument", "config update: only \"registry_auth\" can be changed")
		return
	}
	raw, err := base64.StdEncoding.DecodeString(auth)
	user, pass, found := strings.Cut(string(raw), ":")
	if err != nil || !found || user == "" {
		writeError(w, http.StatusBadRequest, "InvalidArgument", "registry_auth: want base64 of user:password")
		return
	}
	insts, _, err := s.selected(r)
	if err != nil {
		writeError(w, http.StatusNotFound, "NotFound", err.Error())
		return
	}
	up, ok := s.opts.Mounter.(AuthUpdater)
	if !ok {
		writeError(w, http.StatusNotImplemented, "Unsupported", "this mounter cannot change credentials")
		return
	}
	for _, inst := range insts {
		if err := up.UpdateAuth(r.Context(), inst.h, user, pass); err != nil {
			writeError(w, http.StatusInternalServerError, codeOf(err), err.Error())
			return
		}
		s.log.Info("registry credentials updated", zap.String("id", inst.spec.ID))
	}
	w.WriteHeader(http.StatusNoContent)
}

func codeOf(err error) string {
	switch {
	case errors.Is(err, ErrUnsupported):
		return "Unsupported"
	case errors.Is(err, ErrBadConfig):
		return "InvalidConfig"
	case errors.Is(err, ErrNotRAFS):
		return "InvalidBootstrap"
	case errors.Is(err, ErrAccessDenied):
		return "AccessDenied"
	case errors.Is(err, errExists):
		return "AlreadyExists"
	case errors.Is(err, errNotFound):
		return "NotFound"
	}
	return "Internal"
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(ErrorMessage{Code: code, Message: msg})
}
