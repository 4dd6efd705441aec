package client

// Run by tests/clients/test_go_client.py against a live sidecar it starts, which passes:
// WARDEN_ADDRESS, WARDEN_API_KEY (an app with a limit of one request per minute on model
// "limited"), WARDEN_DOWN_ADDRESS (a port nothing listens on).

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	wardenv1 "warden/v1"
)

func env(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: run these tests through tests/clients/test_go_client.py", name)
	}
	return v
}

func dial(t *testing.T, opts ...Option) *Client {
	t.Helper()
	c, err := Dial(env(t, "WARDEN_ADDRESS"), append([]Option{WithAPIKey(env(t, "WARDEN_API_KEY"))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func id(name string) string { return fmt.Sprintf("go-%s-%d", name, time.Now().UnixNano()) }

func TestAuthorizeRecordUsageAudit(t *testing.T) {
	c := dial(t)
	ctx := context.Background()
	req := &wardenv1.AuthorizeRequest{RequestId: id("a"), Model: "gpt-4o-mini", MaxOutputTokens: 100,
		Messages: []*wardenv1.ChatMessage{{Role: "user", Content: "hi"}}}
	d, err := c.Authorize(ctx, req)
	if err != nil || !d.Allowed || d.Reason != "ALLOWED" || d.Model != "gpt-4o-mini" || d.ReservationID == "" {
		t.Fatalf("authorize: %+v %v", d, err)
	}
	usage, err := c.RecordUsage(ctx, &wardenv1.RecordUsageRequest{RequestId: req.RequestId,
		Outcome: wardenv1.Outcome_OUTCOME_COMPLETED, ReservationId: d.ReservationID,
		Usage: &wardenv1.Usage{InputTokens: 10, OutputTokens: 20}})
	if err != nil || usage.Duplicate {
		t.Fatalf("record usage: %v %v", usage, err)
	}
	ids, err := c.Audit(ctx, []*wardenv1.AuditEvent{{Action: "tool.call", RequestId: req.RequestId}})
	if err != nil || len(ids) != 1 || ids[0] == "" {
		t.Fatalf("audit: %v %v", ids, err)
	}
}

func TestADenialHasItsReasons(t *testing.T) {
	c := dial(t)
	ctx := context.Background()
	var last *Decision
	for i := 0; i < 2; i++ {
		d, err := c.Authorize(ctx, &wardenv1.AuthorizeRequest{RequestId: id("d"), Model: "limited"})
		if err != nil {
			t.Fatal(err)
		}
		last = d
	}
	if last.Allowed || last.Reason != "RATE_LIMITED" || last.RetryAfter <= 0 {
		t.Fatalf("second call: %+v", last)
	}
	denying := 0
	for _, r := range last.Response.Results {
		if !r.Allowed {
			denying++
		}
	}
	if denying != 1 {
		t.Fatalf("results: %v", last.Response.Results)
	}
}

func TestBadInputIsInvalidArgumentWithItsField(t *testing.T) {
	c := dial(t)
	_, err := c.Authorize(context.Background(), &wardenv1.AuthorizeRequest{RequestId: "not valid!", Model: "m"})
	werr, ok := err.(*Error)
	if !ok || werr.Code != codes.InvalidArgument || werr.Violations["request_id"] == "" {
		t.Fatalf("error: %#v", err)
	}
	bad, _ := Dial(env(t, "WARDEN_ADDRESS"), WithAPIKey("wk_000000000000_"+fmt.Sprintf("%043d", 0)))
	defer bad.Close()
	_, err = bad.Authorize(context.Background(), &wardenv1.AuthorizeRequest{RequestId: id("k"), Model: "m"})
	if werr, ok := err.(*Error); !ok || werr.Code != codes.Unauthenticated || werr.Reason != "API_KEY_INVALID" {
		t.Fatalf("unknown key: %#v", err)
	}
}

func TestAnExpiredDeadline(t *testing.T) {
	c := dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	time.Sleep(time.Millisecond)
	_, err := c.Authorize(ctx, &wardenv1.AuthorizeRequest{RequestId: id("t"), Model: "gpt-4o-mini"})
	if werr, ok := err.(*Error); !ok || werr.Code != codes.DeadlineExceeded || !werr.Unavailable() {
		t.Fatalf("error: %#v", err)
	}
}

func TestASidecarThatIsDown(t *testing.T) {
	down := env(t, "WARDEN_DOWN_ADDRESS")
	started := time.Now()
	c, err := Dial(down, WithAPIKey("k"), WithTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Authorize(context.Background(), &wardenv1.AuthorizeRequest{RequestId: id("x"), Model: "m"})
	if werr, ok := err.(*Error); !ok || !werr.Unavailable() {
		t.Fatalf("fail closed: %#v", err)
	}
	open, _ := Dial(down, WithAPIKey("k"), WithTimeout(time.Second), WithFailOpen())
	defer open.Close()
	d, err := open.Authorize(context.Background(), &wardenv1.AuthorizeRequest{RequestId: id("y"), Model: "m", MaxOutputTokens: 9})
	if err != nil || !d.Allowed || !d.FailOpen || d.MaxOutputTokens != 9 || open.FailOpens != 1 {
		t.Fatalf("fail open: %+v %v", d, err)
	}
	if time.Since(started) > 10*time.Second {
		t.Fatalf("took %v", time.Since(started))
	}
	if _, err := Dial("nonsense"); err == nil {
		t.Fatal("an address without a port must be refused")
	}
}

// odd answers as a newer server would (enum values this client does not know), or refuses
// without any details.
type odd struct {
	wardenv1.UnimplementedWardenServer
}

func (odd) Authorize(_ context.Context, req *wardenv1.AuthorizeRequest) (*wardenv1.AuthorizeResponse, error) {
	if req.Model == "refuse" {
		return nil, status.Error(codes.PermissionDenied, "no")
	}
	return &wardenv1.AuthorizeResponse{Decision: wardenv1.Decision(7), Reason: wardenv1.Reason(999)}, nil
}

func TestANewerServerAndARefusalWithoutDetails(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	wardenv1.RegisterWardenServer(server, odd{})
	go server.Serve(listener)
	defer server.Stop()
	c, err := Dial(listener.Addr().String(), WithAPIKey("k"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, err := c.Authorize(context.Background(), &wardenv1.AuthorizeRequest{RequestId: id("n"), Model: "new"})
	if err != nil || d.Allowed || d.Reason != "UNKNOWN_999" {
		t.Fatalf("newer: %+v %v", d, err)
	}
	_, err = c.Authorize(context.Background(), &wardenv1.AuthorizeRequest{RequestId: id("r"), Model: "refuse"})
	if werr, ok := err.(*Error); !ok || werr.Code != codes.PermissionDenied || werr.Reason != "" || len(werr.Violations) != 0 {
		t.Fatalf("refusal: %#v", err)
	}
}
