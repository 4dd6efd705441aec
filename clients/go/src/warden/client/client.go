// Package client is a small Go client of Warden, the LLM policy sidecar: Authorize,
// RecordUsage and Audit over gRPC with context deadlines, typed errors read from the rich
// error details, retries of UNAVAILABLE by gRPC's retry policy, and a choice of failing
// closed or open when the sidecar cannot be reached.
//
//	c, err := client.Dial("127.0.0.1:50051", client.WithAPIKey(key))
//	d, err := c.Authorize(ctx, &wardenv1.AuthorizeRequest{RequestId: id, Model: "chat"})
//	if d.Allowed { ... call d.Model with d.MaxOutputTokens ... }
package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	wardenv1 "warden/v1"
)

// Error is a call Warden did not answer as asked: the gRPC code, the stable reason of
// ErrorInfo ("" when the server sent none), the field violations of BadRequest and the
// delay of RetryInfo.
type Error struct {
	Code       codes.Code
	Reason     string
	Message    string
	Violations map[string]string
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("warden: %s (%s): %s", e.Code, e.Reason, e.Message)
	}
	return fmt.Sprintf("warden: %s: %s", e.Code, e.Message)
}

// Unavailable reports whether the sidecar could not be reached or did not answer in time.
func (e *Error) Unavailable() bool {
	return e.Code == codes.Unavailable || e.Code == codes.DeadlineExceeded
}

// AsError turns an error of a generated stub into *Error (nil stays nil).
func AsError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Code: codes.DeadlineExceeded, Message: err.Error()}
	}
	if errors.Is(err, context.Canceled) {
		return &Error{Code: codes.Canceled, Message: err.Error()}
	}
	s, ok := status.FromError(err)
	if !ok {
		return &Error{Code: codes.Unknown, Message: err.Error()}
	}
	out := &Error{Code: s.Code(), Message: s.Message(), Violations: map[string]string{}}
	for _, d := range s.Details() {
		switch detail := d.(type) {
		case *errdetails.ErrorInfo:
			out.Reason = detail.GetReason()
		case *errdetails.BadRequest:
			for _, v := range detail.GetFieldViolations() {
				out.Violations[v.GetField()] = v.GetDescription()
			}
		case *errdetails.RetryInfo:
			out.RetryAfter = detail.GetRetryDelay().AsDuration()
		}
	}
	return out
}

// Decision is what Authorize answered, read for an application. Allowed only for
// DECISION_ALLOW (an unknown value from a newer server denies). FailOpen: the sidecar could
// not be reached and the client was made WithFailOpen; nothing was reserved.
type Decision struct {
	Allowed         bool
	Reason          string
	Model           string
	Provider        string
	MaxOutputTokens int64
	ReservationID   string
	RetryAfter      time.Duration
	FailOpen        bool
	Response        *wardenv1.AuthorizeResponse
}

// ReasonName is a Reason without its prefix; UNKNOWN_<n> for a value this client does not know.
func ReasonName(r wardenv1.Reason) string {
	if name, ok := wardenv1.Reason_name[int32(r)]; ok {
		return strings.TrimPrefix(name, "REASON_")
	}
	return fmt.Sprintf("UNKNOWN_%d", int32(r))
}

// Client wraps a connection to one sidecar.
type Client struct {
	conn     *grpc.ClientConn
	stub     wardenv1.WardenClient
	apiKey   string
	timeout  time.Duration
	failOpen bool
	// FailOpens counts the calls answered as allowed because the sidecar was unreachable.
	FailOpens int
}

type settings struct {
	apiKey   string
	timeout  time.Duration
	failOpen bool
	retries  int
	creds    credentials.TransportCredentials
}

// Option configures Dial.
type Option func(*settings)

// WithAPIKey sets the key every call carries (unless its request names one).
func WithAPIKey(key string) Option { return func(s *settings) { s.apiKey = key } }

// WithTimeout bounds a call whose context has no deadline (default 2 s).
func WithTimeout(d time.Duration) Option { return func(s *settings) { s.timeout = d } }

// WithFailOpen makes Authorize answer an allow marked FailOpen when the sidecar cannot be
// reached (default: the error).
func WithFailOpen() Option { return func(s *settings) { s.failOpen = true } }

// WithRetries sets how many more attempts an UNAVAILABLE call gets (default 3).
func WithRetries(n int) Option { return func(s *settings) { s.retries = n } }

// WithTLS uses TLS (or mTLS, with a client certificate in the credentials).
func WithTLS(c credentials.TransportCredentials) Option { return func(s *settings) { s.creds = c } }

// Dial connects to a sidecar at "host:port" or "unix:/path". It does not wait for the
// connection: a sidecar that is down shows in the first call's error.
func Dial(address string, opts ...Option) (*Client, error) {
	s := settings{timeout: 2 * time.Second, retries: 3}
	for _, o := range opts {
		o(&s)
	}
	if !strings.HasPrefix(address, "unix:") {
		if _, _, err := net.SplitHostPort(address); err != nil {
			return nil, fmt.Errorf("warden: address %q: expected host:port or unix:/path", address)
		}
	}
	dial := []grpc.DialOption{grpc.WithDefaultServiceConfig(serviceConfig(s.retries))}
	if s.creds != nil {
		dial = append(dial, grpc.WithTransportCredentials(s.creds))
	} else {
		dial = append(dial, grpc.WithInsecure())
	}
	conn, err := grpc.Dial(address, dial...)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, stub: wardenv1.NewWardenClient(conn), apiKey: s.apiKey,
		timeout: s.timeout, failOpen: s.failOpen}, nil
}

func serviceConfig(retries int) string {
	if retries <= 0 {
		return `{}`
	}
	return fmt.Sprintf(`{"methodConfig": [{"name": [{"service": "warden.v1.Warden"}],
		"retryPolicy": {"maxAttempts": %d, "initialBackoff": "0.05s", "maxBackoff": "1s",
		"backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}`, retries+1)
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.timeout)
}

// Authorize asks whether an LLM call may go ahead, and how.
func (c *Client) Authorize(ctx context.Context, req *wardenv1.AuthorizeRequest) (*Decision, error) {
	if req.ApiKey == "" && req.Subject == nil {
		req.ApiKey = c.apiKey
	}
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	resp, err := c.stub.Authorize(ctx, req)
	if err != nil {
		werr := AsError(err).(*Error)
		if c.failOpen && werr.Unavailable() {
			c.FailOpens++
			return &Decision{Allowed: true, Reason: "FAIL_OPEN", Model: req.Model,
				Provider: req.Provider, MaxOutputTokens: req.MaxOutputTokens, FailOpen: true}, nil
		}
		return nil, werr
	}
	route := resp.GetRoute()
	d := &Decision{
		Allowed: resp.Decision == wardenv1.Decision_DECISION_ALLOW, Reason: ReasonName(resp.Reason),
		Model: req.Model, Provider: req.Provider, MaxOutputTokens: req.MaxOutputTokens,
		ReservationID: resp.ReservationId, Response: resp,
	}
	if route.GetModel() != "" {
		d.Model, d.Provider = route.GetModel(), route.GetProvider()
	}
	if route.GetMaxOutputTokens() != 0 {
		d.MaxOutputTokens = route.GetMaxOutputTokens()
	}
	if resp.RetryAfter != nil {
		d.RetryAfter = resp.RetryAfter.AsDuration()
	}
	return d, nil
}

// RecordUsage tells Warden what an authorized call used.
func (c *Client) RecordUsage(ctx context.Context, req *wardenv1.RecordUsageRequest) (*wardenv1.RecordUsageResponse, error) {
	if req.ApiKey == "" && req.Subject == nil {
		req.ApiKey = c.apiKey
	}
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	resp, err := c.stub.RecordUsage(ctx, req)
	return resp, AsError(err)
}

// Audit stores audit events and returns their ids in order.
func (c *Client) Audit(ctx context.Context, events []*wardenv1.AuditEvent) ([]string, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	resp, err := c.stub.Audit(ctx, &wardenv1.AuditRequest{ApiKey: c.apiKey, Events: events})
	if err != nil {
		return nil, AsError(err)
	}
	return resp.EventIds, nil
}
