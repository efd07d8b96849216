package main

import (
	"embed"
	"io/fs"
	"path"

	"github.com/herald-ws/herald/codec"
	"github.com/herald-ws/herald/engine"
)

// webFiles are the demo pages: a stock-ticker board on the browser's
// WebSocket API (index.html) and a chat room (chat.html), with no build
// step. herald.js in them is the client the README shows.
//
//go:embed web
var webFiles embed.FS

// webTypes are the content types of the files in web/.
var webTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
}

// demoHandlers serves the demo pages: index.html at / (and /index.html),
// another page at its name with and without .html (chat.html at /chat),
// every other file of web/ at its name. herald serve adds them to the
// engine's plain HTTP routes unless --no-demo is given.
func demoHandlers() map[string]engine.HTTPHandler {
	handlers := make(map[string]engine.HTTPHandler)
	err := fs.WalkDir(webFiles, "web", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := webFiles.ReadFile(name)
		if err != nil {
			return err
		}
		contentType, ok := webTypes[path.Ext(name)]
		if !ok {
			contentType = "application/octet-stream"
		}
		serve := func(dst []byte, _ *codec.Request) ([]byte, int, string) {
			return append(dst, body...), 200, contentType
		}
		route := "/" + name[len("web/"):]
		handlers[route] = serve
		switch {
		case path.Base(route) == "index.html":
			handlers[path.Dir(route)] = serve
		case path.Ext(route) == ".html":
			handlers[route[:len(route)-len(".html")]] = serve
		}
		return nil
	})
	if err != nil {
		panic("herald: reading the embedded demo page: " + err.Error()) // a broken build
	}
	return handlers
}

// demoRoutes is the demo page's routes for herald serve: none with --no-demo.
func demoRoutes(enabled bool) map[string]engine.HTTPHandler {
	if !enabled {
		return nil
	}
	return demoHandlers()
}
