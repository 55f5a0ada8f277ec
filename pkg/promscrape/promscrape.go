// Package promscrape reads a Prometheus metrics page the way a scraper
// does, over HTTP in the text format, so tests assert on what an operator's
// Prometheus would see rather than on the registry behind it.
package promscrape

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// maxPage bounds the page read: a metrics page is kilobytes.
const maxPage = 8 << 20

// Page is one scrape: every metric family by name.
type Page map[string]*dto.MetricFamily

// Get scrapes url (http://host:port/metrics) once.
func Get(ctx context.Context, url string) (Page, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("promscrape: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("promscrape: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("promscrape: GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, maxPage))
	if err != nil {
		return nil, fmt.Errorf("promscrape: parse %s: %w", url, err)
	}
	return fams, nil
}

// Value is the value of the series of family name whose labels include
// every pair of labels ("name", "value", ...): a counter's or gauge's
// value, a histogram's sample count. found is false when no series
// matches; several matching series are summed.
func (p Page) Value(name string, labels ...string) (v float64, found bool) {
	fam := p[name]
	if fam == nil {
		return 0, false
	}
	for _, m := range fam.GetMetric() {
		if !matches(m, labels) {
			continue
		}
		found = true
		switch {
		case m.GetCounter() != nil:
			v += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			v += m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			v += float64(m.GetHistogram().GetSampleCount())
		case m.GetUntyped() != nil:
			v += m.GetUntyped().GetValue()
		}
	}
	return v, found
}

func matches(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
			return l.GetName() == labels[i] && l.GetValue() == labels[i+1]
		}) {
			return false
		}
	}
	return true
}
