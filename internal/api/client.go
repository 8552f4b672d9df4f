package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// clientTimeout bounds one client call when ctx has no earlier deadline.
const clientTimeout = 10 * time.Second

// maxAnswer bounds what a client reads from the daemon.
const maxAnswer = 8 << 20

var httpClient = &http.Client{Timeout: clientTimeout}

// Error is a non-2xx answer of the API, with its "error" message.
type Error struct {
	StatusCode int
	Message    string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	return fmt.Sprintf("%d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// FetchStatus reads GET /api/v1/status of the daemon at baseURL (e.g.
// "http://127.0.0.1:8431").
func FetchStatus(ctx context.Context, baseURL string) (Status, error) {
	var st Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint(baseURL, "/api/v1/status"), nil)
	if err != nil {
		return st, fmt.Errorf("status %s: %w", baseURL, err)
	}
	req.Header.Set("Accept", "application/json")
	if err := do(req, &st); err != nil {
		return st, fmt.Errorf("status %s: %w", baseURL, err)
	}
	return st, nil
}

// PostTrigger sends POST /api/v1/trigger with the bearer token.
func PostTrigger(ctx context.Context, baseURL, token string, r TriggerRequest) error {
	if err := post(ctx, baseURL, "/api/v1/trigger", token, r, nil); err != nil {
		return fmt.Errorf("trigger %s: %w", baseURL, err)
	}
	return nil
}

// PostDrill sends POST /api/v1/drill with the bearer token and returns the
// drill's run ID.
func PostDrill(ctx context.Context, baseURL, token string, r DrillRequest) (string, error) {
	var out accepted
	if err := post(ctx, baseURL, "/api/v1/drill", token, r, &out); err != nil {
		return "", fmt.Errorf("drill %s: %w", baseURL, err)
	}
	return out.RunID, nil
}

// PostAck sends POST /api/v1/ack with the bearer token.
func PostAck(ctx context.Context, baseURL, token string, r AckRequest) error {
	if err := post(ctx, baseURL, "/api/v1/ack", token, r, nil); err != nil {
		return fmt.Errorf("ack %s: %w", baseURL, err)
	}
	return nil
}

func post(ctx context.Context, baseURL, path, token string, body, into any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint(baseURL, path), bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	return do(req, into)
}

func do(req *http.Request, into any) error {
	resp, err := httpClient.Do(req)
	if err != nil {
		return err // the token is in a header, never in the URL: errors cannot hold it
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var eb errorBody
		_ = json.Unmarshal(body, &eb)
		return &Error{StatusCode: resp.StatusCode, Message: eb.Error}
	}
	if into == nil {
		return nil
	}
	if err := json.Unmarshal(body, into); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

func endpoint(base, path string) string { return strings.TrimRight(base, "/") + path }
