package e2e

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testhandler"
)

// chromium finds Debian's chromium; CI installs it (scripts/deps.sh).
func chromium(t *testing.T) string {
	for _, p := range []string{"chromium", "/usr/bin/chromium", "chromium-browser"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium not found (Debian package chromium; scripts/deps.sh installs it)")
	}
	t.Skip("chromium not found")
	return ""
}

// TestDashboardInChromium opens the dashboard in headless Chromium, checks
// it shows a connected device, takes a screenshot, and kicks the device
// with its button.
func TestDashboardInChromium(t *testing.T) {
	bin := chromium(t)
	e := start(t, nil)
	base := startAPI(t, e, config.API{})
	d := e.dial()
	d.connect("dash-dev", 0)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("no-first-run", true), chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(1280, 900))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	cctx, cancelTab := chromedp.NewContext(actx)
	defer cancelTab()

	kick := `button.kick[data-clientid="dash-dev"]`
	// The operator logs in with the API key; the page then holds a session
	// cookie, not the key.
	k := testKey.Load()
	if err := chromedp.Do(cctx,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible("#signin"),
		chromedp.SendKeys("#key", k[0]),
		chromedp.SendKeys("#secret", k[1]),
		chromedp.Click("#signin"),
		chromedp.WaitVisible(kick),
	); err != nil {
		t.Fatal(err)
	}
	// Traffic across two refreshes: the rates and the chart have something to show.
	for i := 0; i < 12; i++ {
		d.send(Frame{Type: testhandler.Publish, Topic: "dash/t", Payload: "p"})
		d.expect(testhandler.Puback, 0)
		time.Sleep(250 * time.Millisecond)
	}
	inRate, err := chromedp.Run(cctx, chromedp.Text("#min"))
	if err != nil {
		t.Fatal(err)
	}
	// Pixels in the series' colours (the axes are grey): the data was drawn.
	drawn, err := chromedp.Run(cctx, chromedp.Evaluate[int](`(() => { const c = document.getElementById("chart"), d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
		const near = (i, r, g, b) => Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b) < 30;
		let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 200 && (near(i, 46, 134, 193) || near(i, 40, 180, 99))) n++; return n })()`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(inRate) == "" || strings.TrimSpace(inRate) == "–" || strings.TrimSpace(inRate) == "0" {
		t.Errorf("messages in /s shows %q while the device published 4 a second", inRate)
	}
	if drawn == 0 {
		t.Error("the message-rate chart drew nothing")
	}
	listeners, err := chromedp.Run(cctx, chromedp.Text("#listeners"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(listeners, "exproto:tcp:default") || !strings.Contains(listeners, e.addr()) {
		t.Errorf("the listeners panel shows %q", listeners)
	}
	cookies, err := chromedp.Call(cctx, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		t.Fatal(err)
	}
	var session *network.Cookie
	for _, c := range cookies.Cookies {
		if c.Name == "exgate_session" {
			session = c
		}
	}
	if session == nil || !session.HTTPOnly || session.SameSite != network.CookieSameSiteStrict || strings.Contains(session.Value, k[1]) {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, no secret", session)
	}
	table, err := chromedp.Run(cctx, chromedp.Text("#clients"))
	if err != nil {
		t.Fatal(err)
	}
	conns, err := chromedp.Run(cctx, chromedp.Text("#conns"))
	if err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(cctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table, "dash-dev") || !strings.Contains(table, "connected") || strings.TrimSpace(conns) != "1" {
		t.Fatalf("dashboard shows clients %q, connections %q", table, conns)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil || img.Bounds().Dx() < 800 {
		t.Fatalf("screenshot: %v %v", img, err)
	}
	// The page is not blank: more than a handful of distinct colours.
	colours := map[uint32]bool{}
	for y := 0; y < img.Bounds().Dy(); y += 7 {
		for x := 0; x < img.Bounds().Dx(); x += 7 {
			r, g, b, _ := img.At(x, y).RGBA()
			colours[r>>8<<16|g>>8<<8|b>>8] = true
		}
	}
	if len(colours) < 8 {
		t.Fatalf("the screenshot looks blank (%d colours)", len(colours))
	}
	if dir := os.Getenv("EXGATE_SCREENSHOT_DIR"); dir != "" {
		_ = os.WriteFile(filepath.Join(dir, "dashboard.png"), shot, 0o644)
	}
	if err := chromedp.Do(cctx, chromedp.Click(kick)); err != nil {
		t.Fatal(err)
	}
	if r := e.h.WaitClosed(t, d.id, 10*time.Second); r != "{shutdown,kicked}" {
		t.Fatalf("kick button: reason %q", r)
	}
	cancelTab()
	cancelAlloc()
}
