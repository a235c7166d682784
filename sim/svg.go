package sim

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// WriteSVG draws the run's divergence over time — how many distinct
// replica states the nodes hold, 1 meaning all equal — as a step line, with
// each partition shaded, the scenario's name and verdict in the title.
func WriteSVG(w io.Writer, r *Report) error {
	const (
		width, height = 900, 320
		left, right   = 60, 20
		top, bottom   = 40, 50
	)
	plotW, plotH := float64(width-left-right), float64(height-top-bottom)
	end := 1.0
	for _, s := range r.Divergence {
		end = max(end, s.TMS)
	}
	for _, f := range r.FaultWindows {
		end = max(end, f.ToMS, f.FromMS)
	}
	maxY := max(2, r.Nodes)
	step := yStep(maxY)
	maxY = (maxY + step - 1) / step * step
	x := func(tms float64) float64 { return float64(left) + plotW*tms/end }
	y := func(v int) float64 { return float64(top) + plotH*(1-float64(v)/float64(maxY)) }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	verdict := "passed"
	if !r.Passed {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15">%s — seed %d, %d nodes: distinct replica states over time (%s)</text>`+"\n",
		left, xmlEscape(r.Scenario), r.Seed, r.Nodes, verdict)
	labelEnd := math.Inf(-1) // where the last fault label ends
	for _, f := range r.FaultWindows {
		to := f.ToMS
		if to < 0 {
			to = end
		}
		fmt.Fprintf(&b, `<rect class="fault" x="%.1f" y="%d" width="%.1f" height="%.0f" fill="#f4c7c3" opacity="0.7"><title>%s %.0f–%.0f ms</title></rect>`+"\n",
			x(f.FromMS), top, max(x(to)-x(f.FromMS), 1), plotH, xmlEscape(f.Kind), f.FromMS, to)
		// A label only where it does not run into the one before; every
		// window keeps its tooltip.
		if lx := x(f.FromMS) + 3; lx >= labelEnd {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#a33">%s</text>`+"\n", lx, top+14, xmlEscape(f.Kind))
			labelEnd = lx + 7.5*float64(len(f.Kind)) + 6
		}
	}
	// Axes and gridlines: at most about eight, at 1, 2 or 5 times a power
	// of ten, so that a 1,000-node run stays as readable as a 3-node one.
	for v := 0; v <= maxY; v += step {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%d</text>`+"\n",
			left, y(v), width-right, y(v), left-6, y(v)+4, v)
	}
	for i := 0; i <= 5; i++ {
		t := end * float64(i) / 5
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%.1f s</text>`+"\n", x(t), height-bottom+18, t/1000)
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, height-bottom, width-right, height-bottom)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, top, left, height-bottom)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">time since the workload started</text>`+"\n", left+int(plotW)/2, height-10)
	// The step line.
	if len(r.Divergence) > 0 {
		var pts []string
		prev := r.Divergence[0]
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(prev.TMS), y(prev.Distinct)))
		for _, s := range r.Divergence[1:] {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(s.TMS), y(prev.Distinct)), fmt.Sprintf("%.1f,%.1f", x(s.TMS), y(s.Distinct)))
			prev = s
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="#1f5fbf" stroke-width="2" points="%s"/>`+"\n", strings.Join(pts, " "))
	}
	if r.Converged {
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end" fill="#1f7a1f">converged %.0f ms after the last heal or write</text>`+"\n", width-right, top-6, r.ConvergenceMS)
	} else {
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end" fill="#a33">did not converge</text>`+"\n", width-right, top-6)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

// yStep is the gridline spacing for a y axis from 0 to maxY: the smallest
// of 1, 2, 5, 10, 20, 50, ... that draws at most eight intervals.
func yStep(maxY int) int {
	for unit := 1; ; unit *= 10 {
		for _, m := range []int{1, 2, 5} {
			if step := m * unit; maxY <= 8*step {
				return step
			}
		}
	}
}
