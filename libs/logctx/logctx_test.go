package logctx_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"tenantbase/libs/logctx"
)

func TestAttributesFollowTheRequest(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewJSONHandler(&buf, nil))
	ctx := logctx.With(context.Background(), base, "request_id", "r1")
	logctx.Add(ctx, "tenant_id", 7)
	logctx.From(ctx, nil).Info("from")
	logctx.Add(ctx, "user_id", "42")
	logctx.Line(ctx, nil, slog.LevelInfo, "line", slog.Int("status", 200))
	if logctx.Add(context.Background(), "x", 1) {
		t.Fatal("Add to a context without a logger succeeded")
	}
	var lines []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 || lines[0]["request_id"] != "r1" || lines[0]["tenant_id"] != 7.0 || lines[0]["user_id"] != nil ||
		lines[1]["user_id"] != "42" || lines[1]["tenant_id"] != 7.0 || lines[1]["status"] != 200.0 {
		t.Fatalf("lines %v", lines)
	}
}
