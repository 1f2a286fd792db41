// vic-vcsim: a small vSphere API simulator server for vic's tests.
//
// It starts govmomi's simulator library (Debian's golang-github-vmware-govmomi-dev,
// govmomi 0.24) with a vCenter (default) or ESXi inventory on 127.0.0.1, prints one
// line of JSON describing how to reach it, and serves until SIGTERM or SIGINT.
//
// Build with tests/vcsim/build.sh (GOPATH mode, no network needed).
package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"

	// REST (tags, content library) and storage policy endpoints, registered when
	// Service.RegisterEndpoints is set.
	_ "github.com/vmware/govmomi/pbm/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator"
)

// info is the JSON line printed on stdout (and written to -info) once listening.
type info struct {
	URL        string `json:"url"`
	Thumbprint string `json:"thumbprint"`
	PID        int    `json:"pid"`
	Addr       string `json:"addr"`
	Username   string `json:"username"`
	Password   string `json:"password"`
	// AnyLogin is true when no -username/-password was given: then any non-empty
	// user name and password log in.
	AnyLogin bool `json:"any_login"`
	// CertPEM is the server certificate (self-signed), for clients that want to pin it
	// as a root instead of checking the thumbprint.
	CertPEM string `json:"cert_pem,omitempty"`
}

func main() {
	log.SetPrefix("vcsim: ")
	log.SetFlags(log.LstdFlags)

	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0 picks a free port)")
	esx := flag.Bool("esx", false, "simulate a standalone ESXi host instead of a vCenter")
	dc := flag.Int("dc", 1, "datacenters (vCenter only)")
	cluster := flag.Int("cluster", 1, "clusters per datacenter (vCenter only)")
	clusterHost := flag.Int("host", 3, "hosts per cluster (vCenter only)")
	standaloneHost := flag.Int("standalone-host", 1, "standalone hosts per datacenter (vCenter only)")
	pool := flag.Int("pool", 0, "child resource pools per cluster, under its root pool 'Resources' (vCenter only)")
	app := flag.Int("app", 0, "vApps per cluster (vCenter only)")
	pod := flag.Int("pod", 0, "storage pods (datastore clusters) per datacenter (vCenter only)")
	folder := flag.Int("folder", 0, "datacenters placed in a folder (vCenter only)")
	pg := flag.Int("pg", 1, "distributed virtual port groups per datacenter (vCenter only)")
	vm := flag.Int("vm", 0, "pre-made virtual machines per resource pool / host")
	ds := flag.Int("ds", 1, "datastores (each a temporary host directory)")
	autostart := flag.Bool("autostart", true, "power on the pre-made VMs")
	username := flag.String("username", "", "the only user name that may log in (default: any non-empty)")
	password := flag.String("password", "", "the only password that may log in (default: any non-empty)")
	infoFile := flag.String("info", "", "also write the JSON info line to this file")
	datastoreDir := flag.String("datastore-dir", "", "parent directory of the datastores' temporary directories (default: $TMPDIR)")
	certFile := flag.String("tls-cert", "", "PEM certificate to serve (default: a fresh self-signed RSA-2048 certificate)")
	keyFile := flag.String("tls-key", "", "PEM private key for -tls-cert")
	noTLS := flag.Bool("no-tls", false, "serve plain HTTP instead of HTTPS")
	delay := flag.Int("delay", 0, "milliseconds to delay every SOAP call")
	trace := flag.Bool("trace", false, "trace SOAP requests and responses to stderr")
	flag.Parse()

	if flag.NArg() != 0 {
		log.Fatalf("unexpected arguments: %v", flag.Args())
	}

	if *datastoreDir != "" {
		if err := os.MkdirAll(*datastoreDir, 0o755); err != nil {
			log.Fatal(err)
		}
		abs, err := filepath.Abs(*datastoreDir)
		if err != nil {
			log.Fatal(err)
		}
		// Model.Create puts each datastore in ioutil.TempDir("", ...), which honours TMPDIR.
		os.Setenv("TMPDIR", abs)
	}

	simulator.Trace = *trace

	var model *simulator.Model
	if *esx {
		model = simulator.ESX()
	} else {
		model = simulator.VPX()
		model.Datacenter = *dc
		model.Cluster = *cluster
		model.ClusterHost = *clusterHost
		model.Host = *standaloneHost
		model.Pool = *pool
		model.App = *app
		model.Pod = *pod
		model.Folder = *folder
		model.Portgroup = *pg
	}
	model.Machine = *vm
	model.Datastore = *ds
	model.Autostart = *autostart
	model.DelayConfig.Delay = *delay

	if err := model.Create(); err != nil {
		log.Fatalf("creating the inventory: %v", err)
	}
	defer model.Remove()

	// Credentials: the simulator accepts any non-empty user and password when
	// Service.Listen.User is nil (it then uses simulator.DefaultLogin, "user:pass",
	// in the URL). Any other *url.Userinfo makes Login check both exactly.
	listenURL := &url.URL{Host: *listen}
	anyLogin := *username == "" && *password == ""
	if !anyLogin {
		u, p := *username, *password
		if u == "" {
			u = "user"
		}
		if p == "" {
			p = "pass"
		}
		listenURL.User = url.UserPassword(u, p)
	}
	model.Service.Listen = listenURL
	model.Service.RegisterEndpoints = true

	var cert *tls.Certificate
	if !*noTLS {
		var err error
		if *certFile != "" || *keyFile != "" {
			if *certFile == "" || *keyFile == "" {
				log.Fatal("-tls-cert and -tls-key go together")
			}
			c, lerr := tls.LoadX509KeyPair(*certFile, *keyFile)
			cert, err = &c, lerr
		} else {
			cert, err = selfSigned()
		}
		if err != nil {
			log.Fatalf("TLS certificate: %v", err)
		}
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
	}

	server := model.Service.NewServer()

	out := info{
		URL:      server.URL.String(),
		PID:      os.Getpid(),
		Addr:     server.URL.Host,
		Username: server.URL.User.Username(),
		AnyLogin: anyLogin,
	}
	out.Password, _ = server.URL.User.Password()
	if cert != nil {
		der := cert.Certificate[0]
		out.Thumbprint = thumbprintSHA1(der)
		out.CertPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}

	line, err := json.Marshal(out)
	if err != nil {
		log.Fatal(err)
	}
	line = append(line, '\n')

	if *infoFile != "" {
		// Write then rename, so that a reader polling for the file never sees half of it.
		tmp := *infoFile + ".tmp"
		if err := ioutil.WriteFile(tmp, line, 0o644); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(tmp, *infoFile); err != nil {
			log.Fatal(err)
		}
	}
	if _, err := os.Stdout.Write(line); err != nil {
		log.Printf("writing stdout: %v", err)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	s := <-sig
	log.Printf("%v: shutting down", s)

	server.Close()
	model.Remove()
	if *infoFile != "" {
		_ = os.Remove(*infoFile)
	}
}

// thumbprintSHA1 renders the SHA-1 of a DER certificate as vSphere shows it:
// upper-case hex pairs separated by colons.
func thumbprintSHA1(der []byte) string {
	sum := sha1.Sum(der)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// selfSigned makes a fresh RSA-2048 certificate for 127.0.0.1, ::1 and localhost.
// (govmomi's built-in test certificate has a 1024-bit key, which OpenSSL at
// security level 2 and rustls refuse.)
func selfSigned() (*tls.Certificate, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "127.0.0.1", Organization: []string{"vic vcsim"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		// Not a CA and no key usage extension: webpki (rustls) rejects a CA certificate
		// used as the server's own, and this way one file serves both as the server
		// certificate and as the root a client trusts.
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
