// Command benchplot draws the container start benchmark's results (the JSON BenchmarkContainerStart
// writes) as a PNG bar chart: per image, the seconds from pull to ready for each mode, split into
// pull, create and run-to-ready.
//
//	go run ./benchplot -in results.json -out docs/bench-containers.png
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"log"
	"os"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

type result struct {
	Image   string  `json:"image"`
	Mode    string  `json:"mode"`
	ImageMB float64 `json:"image_mb"`
	Pull    float64 `json:"pull_s"`
	Create  float64 `json:"create_s"`
	Ready   float64 `json:"ready_s"`
	Total   float64 `json:"total_s"`
	LinkMB  float64 `json:"link_mb"`
	Skipped string  `json:"skipped"`
}

var (
	white  = color.RGBA{255, 255, 255, 255}
	black  = color.RGBA{30, 30, 30, 255}
	grey   = color.RGBA{200, 200, 200, 255}
	phases = []color.RGBA{{66, 133, 244, 255}, {251, 188, 5, 255}, {52, 168, 83, 255}} // pull, create, ready
)

func main() {
	in := flag.String("in", "", "results JSON")
	out := flag.String("out", "bench-containers.png", "PNG to write")
	flag.Parse()
	data, err := os.ReadFile(*in)
	if err != nil {
		log.Fatal(err)
	}
	var rs []result
	if err := json.Unmarshal(data, &rs); err != nil {
		log.Fatal(err)
	}
	// Means per (image, mode), in first-seen order.
	type key struct{ image, mode string }
	var order []key
	agg := map[key]*result{}
	count := map[key]float64{}
	for _, r := range rs {
		k := key{r.Image, r.Mode}
		if _, ok := agg[k]; !ok {
			cp := r
			cp.Pull, cp.Create, cp.Ready, cp.Total = 0, 0, 0, 0
			agg[k] = &cp
			order = append(order, k)
		}
		a := agg[k]
		a.Pull += r.Pull
		a.Create += r.Create
		a.Ready += r.Ready
		a.Total += r.Total
		count[k]++
	}
	maxT := 1.0
	for _, k := range order {
		a := agg[k]
		n := count[k]
		a.Pull, a.Create, a.Ready, a.Total = a.Pull/n, a.Create/n, a.Ready/n, a.Total/n
		maxT = max(maxT, a.Total)
	}

	const (
		w, left, right, top, barH, gap = 1000, 330, 120, 60, 22, 8
	)
	h := top + len(order)*(barH+gap) + 80
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), &image.Uniform{white}, image.Point{}, draw.Src)
	text(img, 10, 20, "Container start: pull + create + run-to-ready, registry behind a 100 Mbit/s link", black)
	text(img, 10, 38, "containerd 1.6 + runc; nydus-snapshotter v0.16.1 launching dfnydus as nydusd", black)
	scale := float64(w-left-right) / maxT
	y := top
	prev := ""
	for _, k := range order {
		a := agg[k]
		if a.Image != prev && prev != "" {
			fill(img, 10, y-gap/2-1, w-10, y-gap/2, grey)
		}
		prev = a.Image
		label := fmt.Sprintf("%s (%.0f MB): %s", a.Image, a.ImageMB, a.Mode)
		text(img, 10, y+15, label, black)
		if a.Skipped != "" {
			text(img, left, y+15, "skipped: "+a.Skipped, black)
			y += barH + gap
			continue
		}
		x := float64(left)
		for i, v := range []float64{a.Pull, a.Create, a.Ready} {
			x1 := x + v*scale
			fill(img, int(x), y, int(x1)+1, y+barH, phases[i])
			x = x1
		}
		text(img, int(x)+6, y+15, fmt.Sprintf("%.2f s", a.Total), black)
		y += barH + gap
	}
	// Axis and legend.
	fill(img, left, y, w-right, y+1, black)
	for s := 0.0; s <= maxT; s += tick(maxT) {
		x := left + int(s*scale)
		fill(img, x, y, x+1, y+5, black)
		text(img, x-8, y+18, fmt.Sprintf("%gs", s), black)
	}
	lx := left
	for i, name := range []string{"pull", "create", "run to ready"} {
		fill(img, lx, y+32, lx+14, y+44, phases[i])
		text(img, lx+18, y+43, name, black)
		lx += 130
	}
	f, err := os.Create(*out)
	if err != nil {
		log.Fatal(err)
	}
	if err := png.Encode(f, img); err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
}

func tick(maxT float64) float64 {
	for _, t := range []float64{1, 2, 5, 10, 20, 30, 60, 120, 300} {
		if maxT/t <= 10 {
			return t
		}
	}
	return 600
}

func fill(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	draw.Draw(img, image.Rect(x0, y0, x1, y1), &image.Uniform{c}, image.Point{}, draw.Src)
}

func text(img *image.RGBA, x, y int, s string, c color.RGBA) {
	d := &font.Drawer{Dst: img, Src: &image.Uniform{c}, Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}
