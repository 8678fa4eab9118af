package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// authScheme is how a registry wants requests authorized, learnt from its WWW-Authenticate.
type authScheme int

const (
	authNone authScheme = iota
	authBasic
	authBearer
)

// hostState is what a Client knows about one registry host.
type hostState struct {
	host string

	pingMu sync.Mutex // serialises the first contact
	pinged bool

	mu      sync.Mutex
	scheme  string // "https" or "http"
	auth    authScheme
	realm   string
	service string
	tokens  map[string]bearerToken // by scope key
	cred    *Credential            // looked up once
}

type bearerToken struct {
	value   string
	expires time.Time // when to stop using it (a margin before the real expiry)
}

// Token lifetimes (docker token spec: expires_in defaults to 60 seconds and should not be less).
const (
	minTokenLifetime = 60 * time.Second
	maxTokenResponse = 1 << 20
)

// learn records what a 401 response's challenges say. It reports whether anything usable was found.
func (hs *hostState) learn(chs []challenge) (scope string, ok bool) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	for _, c := range chs {
		if c.Scheme == "bearer" && c.Params["realm"] != "" {
			hs.auth, hs.realm, hs.service = authBearer, c.Params["realm"], c.Params["service"]
			return c.Params["scope"], true
		}
	}
	for _, c := range chs {
		if c.Scheme == "basic" {
			hs.auth = authBasic
			return "", true
		}
	}
	return "", false
}

// scopeKey is the canonical (sorted, deduplicated) form of a set of scopes.
func scopeKey(scopes []string) string {
	set := map[string]bool{}
	for _, s := range scopes {
		for _, f := range strings.Fields(s) {
			set[f] = true
		}
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// repoScope is the token scope for actions ("pull" or "pull,push") on a repository.
func repoScope(repo, actions string) string {
	return "repository:" + repo + ":" + actions
}

// credential returns (and caches) the credential for hs's host.
func (c *Client) credential(ctx context.Context, hs *hostState) (Credential, error) {
	hs.mu.Lock()
	cached := hs.cred
	hs.mu.Unlock()
	if cached != nil {
		return *cached, nil
	}
	cred, err := c.creds.lookup(ctx, hs.host)
	if err != nil {
		return Credential{}, err
	}
	hs.mu.Lock()
	hs.cred = &cred
	hs.mu.Unlock()
	return cred, nil
}

// authorize sets req's Authorization header for a request needing scopes. refresh forces a new
// bearer token (after the registry refused the cached one).
func (c *Client) authorize(ctx context.Context, hs *hostState, req *http.Request, scopes []string, refresh bool) error {
	hs.mu.Lock()
	scheme := hs.auth
	hs.mu.Unlock()
	switch scheme {
	case authBasic:
		cred, err := c.credential(ctx, hs)
		if err != nil {
			return err
		}
		if cred.Username != "" {
			req.SetBasicAuth(cred.Username, cred.Password)
		}
	case authBearer:
		tok, err := c.token(ctx, hs, scopeKey(scopes), refresh)
		if err != nil {
			return err
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
	}
	return nil
}

// token returns a bearer token for the scope key, from the cache unless refresh or expired.
func (c *Client) token(ctx context.Context, hs *hostState, key string, refresh bool) (string, error) {
	hs.mu.Lock()
	if t, ok := hs.tokens[key]; ok && !refresh && time.Now().Before(t.expires) {
		hs.mu.Unlock()
		return t.value, nil
	}
	realm, service := hs.realm, hs.service
	hs.mu.Unlock()

	v, err, _ := c.tokenFlight.Do(hs.host+"\x00"+key, func() (any, error) {
		return c.fetchToken(ctx, hs, realm, service, key)
	})
	if err != nil {
		return "", err
	}
	t := v.(bearerToken)
	hs.mu.Lock()
	if hs.tokens == nil {
		hs.tokens = map[string]bearerToken{}
	}
	hs.tokens[key] = t
	hs.mu.Unlock()
	return t.value, nil
}

// fetchToken asks the token service (docker token auth spec) for a token with the scopes in key,
// authenticating with the host's credential when there is one.
func (c *Client) fetchToken(ctx context.Context, hs *hostState, realm, service, key string) (bearerToken, error) {
	cred, err := c.credential(ctx, hs)
	if err != nil {
		return bearerToken{}, err
	}
	u, err := url.Parse(realm)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return bearerToken{}, fmt.Errorf("registry %s: bad token realm %q", hs.host, realm)
	}
	hs.mu.Lock()
	regScheme := hs.scheme
	hs.mu.Unlock()
	if regScheme == "https" && u.Scheme != "https" {
		// The credential would cross the network in clear text, to wherever the realm says.
		return bearerToken{}, fmt.Errorf("registry %s: token realm %q is plain http for an https registry", hs.host, realm)
	}
	scopes := strings.Fields(key)
	build := func() (*http.Request, error) {
		if cred.IdentityToken != "" {
			// OAuth2 refresh-token grant (docker token spec, oauth.md).
			form := url.Values{}
			form.Set("grant_type", "refresh_token")
			form.Set("refresh_token", cred.IdentityToken)
			form.Set("service", service)
			form.Set("client_id", c.opts.UserAgent)
			if key != "" {
				form.Set("scope", key)
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(form.Encode()))
			if err != nil {
				return nil, err
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return req, nil
		}
		q := u.Query()
		if service != "" {
			q.Set("service", service)
		}
		for _, s := range scopes {
			q.Add("scope", s)
		}
		tu := *u
		tu.RawQuery = q.Encode()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, tu.String(), nil)
		if err != nil {
			return nil, err
		}
		if cred.Username != "" {
			req.SetBasicAuth(cred.Username, cred.Password)
		}
		return req, nil
	}
	resp, err := c.send(ctx, hs.host, build, true)
	if err != nil {
		return bearerToken{}, fmt.Errorf("registry %s: get token: %w", hs.host, err)
	}
	if resp.StatusCode != http.StatusOK {
		he := newHTTPError(hs.host, resp)
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			return bearerToken{}, &AuthError{Registry: hs.host, User: cred.user(), Cause: he}
		}
		return bearerToken{}, fmt.Errorf("registry %s: get token from %s: %w", hs.host, u.Host, he)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenResponse+1))
	if err != nil {
		return bearerToken{}, fmt.Errorf("registry %s: read token: %w", hs.host, err)
	}
	if len(body) > maxTokenResponse {
		return bearerToken{}, fmt.Errorf("registry %s: token response larger than %d bytes", hs.host, maxTokenResponse)
	}
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		return bearerToken{}, fmt.Errorf("registry %s: bad token response: %w", hs.host, err)
	}
	tok := tr.Token
	if tok == "" {
		tok = tr.AccessToken
	}
	if tok == "" {
		return bearerToken{}, fmt.Errorf("registry %s: token response has no token", hs.host)
	}
	life := time.Duration(tr.ExpiresIn) * time.Second
	if tr.ExpiresIn <= 0 || tr.ExpiresIn > 1<<31 || life < minTokenLifetime {
		life = minTokenLifetime
	}
	// Stop using a token a little before it expires so it does not expire mid-request.
	margin := life / 10
	if margin > 30*time.Second {
		margin = 30 * time.Second
	}
	c.log.Debug("got bearer token", zap.String("registry", hs.host), zap.String("scope", key),
		zap.Duration("lifetime", life), zap.Bool("authenticated", !cred.empty()))
	return bearerToken{value: tok, expires: time.Now().Add(life - margin)}, nil
}

// user names the credential's user for error messages (never the secret).
func (c Credential) user() string {
	switch {
	case c.Username != "":
		return c.Username
	case c.IdentityToken != "":
		return "<identity token>"
	}
	return ""
}
