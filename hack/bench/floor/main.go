// Command floor is the webhook benchmark's floor: a bare Go HTTPS server
// that reads the request body and answers a constant AdmissionReview. It
// costs what TLS, net/http and the load generator cost on this machine, and
// nothing else, so the webhook's figures are read against it.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

// review is a constant allowed response. The load generator checks only
// that it says allowed.
const review = `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","response":{"uid":"0df28fbd-5f5f-4c9a-8d3f-2f0a7b9d6c11","allowed":true}}`

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (loopback)")
	certDir := flag.String("cert-dir", "", "directory with tls.crt and tls.key (required)")
	flag.Parse()
	if err := run(*addr, *certDir); err != nil {
		fmt.Fprintf(os.Stderr, "floor: %v\n", err)
		os.Exit(1)
	}
}

func run(addr, certDir string) error {
	cert, err := tls.LoadX509KeyPair(filepath.Join(certDir, "tls.crt"), filepath.Join(certDir, "tls.key"))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	// The same TLS settings as the webhook's server (controller-runtime):
	// h2 offered, TLS 1.2 minimum.
	tl := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}})
	body := []byte(review)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})}
	// The bench reads the address from the first line.
	fmt.Println(ln.Addr().String())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(tl); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}
