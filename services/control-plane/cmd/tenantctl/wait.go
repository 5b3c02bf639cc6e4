package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/schollz/progressbar/v3"

	"tenantbase/services/control-plane/cmd/tenantctl/internal/api"
)

// pollInterval is how often --wait asks the API where an operation is.
const pollInterval = 500 * time.Millisecond

// pollOutage is how long --wait keeps asking while the control plane does
// not answer (a restart, say) before it gives up; the operation itself
// goes on either way.
const pollOutage = time.Minute

// progress is where a long operation stands, as one answer of the API
// shows it.
type progress struct {
	// Object is what the API answered, printed when the operation ends.
	Object json.RawMessage
	// Status is a short word or phrase: "provisioning", "2 failed".
	Status string
	// Done of Total units of work; Total 0 when the API does not count (a
	// spinner then).
	Done, Total int
	// Ended is true once the operation is over, and Failure then says why
	// it did not succeed ("" when it did).
	Ended   bool
	Failure string
}

// wait follows an operation that stands at first, asking poll until it
// ends, and shows its progress on stderr: a progress bar on a terminal,
// a line for each change otherwise. It then prints the last object on
// stdout and fails (exit 1) when the operation did.
func (a *ctl) wait(ctx context.Context, title string, first progress, poll func(context.Context) (progress, error)) error {
	start := time.Now()
	var view progressView = &lineView{w: a.stderr, title: title}
	if isTerminal(a.stderr) {
		view = &barView{w: a.stderr, title: title}
	}
	p := first
	var outageSince time.Time
	for !p.Ended {
		view.show(p)
		select {
		case <-ctx.Done():
			view.stop()
			return ctx.Err()
		case <-time.After(pollInterval):
		}
		next, err := poll(ctx)
		switch {
		case err == nil:
			p, outageSince = next, time.Time{}
		case transient(err) && ctx.Err() == nil:
			if outageSince.IsZero() {
				outageSince = time.Now()
			}
			if time.Since(outageSince) < pollOutage {
				continue
			}
			fallthrough
		default:
			view.stop()
			return err
		}
	}
	view.stop()
	fmt.Fprintf(a.stderr, "%s: %s (%s)\n", title, statusText(p), time.Since(start).Round(100*time.Millisecond))
	if err := a.out.object(p.Object); err != nil {
		return err
	}
	if p.Failure != "" {
		return failed(errors.New(clean(title + ": " + p.Failure)))
	}
	return nil
}

// follow waits for the operation on obj, an object of the API as it stands
// at first: get fetches it again, at reads where it stands.
func (a *ctl) follow(ctx context.Context, title string, obj json.RawMessage,
	get func(context.Context) (json.RawMessage, error), at func(json.RawMessage) (progress, error)) error {
	first, err := at(obj)
	if err != nil {
		return err
	}
	return a.wait(ctx, title, first, func(ctx context.Context) (progress, error) {
		obj, err := get(ctx)
		if err != nil {
			return progress{}, err
		}
		return at(obj)
	})
}

// transient errors are worth asking again: no answer, or a 5xx.
func transient(err error) bool {
	var apiErr *api.Error
	if errors.As(err, &apiErr) {
		return apiErr.Status >= http.StatusInternalServerError
	}
	return !errors.Is(err, context.Canceled)
}

func statusText(p progress) string {
	s := clean(p.Status)
	if p.Total > 0 {
		s = strconv.Itoa(p.Done) + "/" + strconv.Itoa(p.Total) + " " + s
	}
	return s
}

type progressView interface {
	show(progress)
	stop()
}

// lineView prints a line whenever the progress changes, for logs and
// pipes.
type lineView struct {
	w     io.Writer
	title string
	last  string
}

func (v *lineView) show(p progress) {
	if s := statusText(p); s != v.last {
		v.last = s
		fmt.Fprintf(v.w, "%s: %s\n", v.title, s)
	}
}

func (v *lineView) stop() {}

// barView draws a progress bar: a spinner with the elapsed time while the
// total is unknown, a bar of done/total otherwise. It is cleared when the
// operation ends.
type barView struct {
	w     io.Writer
	title string
	bar   *progressbar.ProgressBar
	total int
}

func (v *barView) show(p progress) {
	desc := v.title + ": " + clean(p.Status)
	if v.bar == nil || p.Total != v.total {
		v.stop()
		v.total = p.Total
		v.bar = newBar(v.w, p.Total, desc)
	}
	v.bar.Describe(desc)
	if p.Total > 0 {
		_ = v.bar.Set(min(p.Done, p.Total))
	}
}

func (v *barView) stop() {
	if v.bar != nil {
		_ = v.bar.Finish()
		v.bar = nil
	}
}

func newBar(w io.Writer, total int, desc string) *progressbar.ProgressBar {
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionSpinnerType(14),
	}
	if total <= 0 {
		return progressbar.NewOptions(-1, opts...)
	}
	return progressbar.NewOptions(total, append(opts, progressbar.OptionShowCount())...)
}
