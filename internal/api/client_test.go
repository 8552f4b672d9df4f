package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestClient(t *testing.T) {
	h := newHarness(t, testToken, func(_ *Actions, o *Options) { o.Burst = 100 })
	ts := httptest.NewServer(h.srv)
	defer ts.Close()
	ctx := context.Background()

	st, err := FetchStatus(ctx, ts.URL+"/")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(StatusOf(sampleSnapshot(), nil), st); diff != "" {
		t.Errorf("FetchStatus (-want +got):\n%s", diff)
	}

	if err := PostTrigger(ctx, ts.URL, testToken, TriggerRequest{Kind: "onbattery", Reason: "card says so", Source: "ups-card"}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]TriggerRequest{{Kind: "onbattery", Reason: "card says so", Source: "ups-card"}}, h.triggers); diff != "" {
		t.Errorf("trigger (-want +got):\n%s", diff)
	}
	id, err := PostDrill(ctx, ts.URL, testToken, DrillRequest{DryRun: true})
	if err != nil || id != "drill-42" {
		t.Errorf("PostDrill = %q, %v", id, err)
	}

	err = PostTrigger(ctx, ts.URL, "wrong", TriggerRequest{Kind: "shutdown"})
	var ae *Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusUnauthorized || ae.Message != "wrong bearer token" {
		t.Fatalf("wrong token: %v", err)
	}
	if strings.Contains(err.Error(), "wrong\"") || strings.Contains(err.Error(), testToken) {
		t.Errorf("error %q shows a token", err)
	}
	err = PostTrigger(ctx, ts.URL, testToken, TriggerRequest{Kind: "later"})
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusBadRequest || !strings.Contains(err.Error(), `got "later"`) {
		t.Errorf("bad kind: %v", err)
	}
	if err := PostAck(ctx, ts.URL, testToken, AckRequest{ID: "run-1"}); err != nil || len(h.acks) != 1 || h.acks[0].ID != "run-1" {
		t.Errorf("ack: %v %+v", err, h.acks)
	}
	if _, err := FetchStatus(ctx, "http://127.0.0.1:1"); err == nil {
		t.Error("FetchStatus of a closed port succeeded")
	}
}
