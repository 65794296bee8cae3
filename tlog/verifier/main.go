// Command verifier checks a tiled transparency log written by grompi-tlog
// with Go's reference implementation, golang.org/x/mod/sumdb/note and
// golang.org/x/mod/sumdb/tlog, and nothing of grompi's.
//
// Usage:
//
//	verifier <dir>
//
// The directory holds:
//
//	vkey        the log's verifier key, one line
//	checkpoint  the signed checkpoint (a C2SP tlog-checkpoint note)
//	tile/...    the hash tiles and entry bundles, at their C2SP tlog-tiles paths
//	proofs      one claim per line:
//	              inclusion <index> <hash,hash,...|->
//	              consistency <old size> <old root> <hash,hash,...|->
//	            hashes in base64; "-" is an empty proof
//	witness-vkey, cosigned
//	            optional: a witness's cosignature verifier key (type 0x04)
//	            and the checkpoint with the log's signature and the
//	            witness's cosignature appended
//
// It checks, each with x/mod only: the checkpoint's signature (note.Open),
// the root against the tiles (tlog.TileHashReader authenticates every tile
// it reads against the tree, and tlog.TreeHash recomputes the root), every
// entry of every bundle against its leaf hash in the tiles
// (tlog.RecordHash), each inclusion proof (tlog.CheckRecord, and equality
// with tlog.ProveRecord over the tiles), and each consistency proof
// (tlog.CheckTree, tlog.TreeHash of the old size, and equality with
// tlog.ProveTree). It prints "OK ..." and exits 0, or prints "REJECT: ..."
// and exits 1.
//
// The first entry of every bundle is also proved included from the tiles
// (tlog.ProveRecord) and checked against the signed root (tlog.CheckRecord). That is not
// redundant: x/mod's TileHashReader (0.7.0, and the same code upstream)
// authenticates the full tiles it fetches for the requested hashes in a
// loop that starts at len(stx), the number of subtrees of the tree hash,
// rather than at the number of distinct tiles those subtrees lie in. When
// several of them share a tile (a tree of 70,000 has 6 subtrees in 3
// tiles), the first extra tiles are returned unauthenticated: a changed
// byte in tile/0/000 of such a tree comes back as a leaf hash without
// error. Proving one entry per tile against the root closes that gap with
// x/mod's own proof checker.
//
// x/mod's note package has no verifier for C2SP tlog-cosignature v1
// (signature type 0x04). For the optional cosigned checkpoint, note.Open
// still parses the note and matches keys, but the Verifier it is given
// (cosigVerifier below) computes the key ID and the signed message from the
// C2SP text itself, with crypto/ed25519: a second implementation of that
// format, not a reference one.
//
// Go's tile paths carry the tile height (tile/8/L/N); C2SP's do not
// (tile/L/N). Only the reading of files adapts to that; the math is x/mod's.
package main

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const height = 8

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: verifier <dir>")
		os.Exit(2)
	}
	summary, err := verify(os.Args[1])
	if err != nil {
		fmt.Println("REJECT:", err)
		os.Exit(1)
	}
	fmt.Println("OK", summary)
}

// dirTiles reads tiles from C2SP paths under a directory, each file once.
type dirTiles struct {
	dir   string
	cache map[string][]byte
}

func (d dirTiles) Height() int { return height }

// c2spPath turns Go's tile/8/L/N[.p/W] into C2SP's tile/L/N[.p/W].
func c2spPath(t tlog.Tile) (string, error) {
	p := t.Path()
	prefix := fmt.Sprintf("tile/%d/", height)
	if t.H != height || !strings.HasPrefix(p, prefix) {
		return "", fmt.Errorf("unexpected tile %s", p)
	}
	return "tile/" + strings.TrimPrefix(p, prefix), nil
}

func (d dirTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		p, err := c2spPath(t)
		if err != nil {
			return nil, err
		}
		data, ok := d.cache[p]
		if !ok {
			data, err = os.ReadFile(filepath.Join(d.dir, filepath.FromSlash(p)))
			if err != nil {
				return nil, err
			}
			d.cache[p] = data
		}
		out[i] = data
	}
	return out, nil
}

func (d dirTiles) SaveTiles(tiles []tlog.Tile, data [][]byte) {}

// cosigVerifier checks timestamped Ed25519 cosignatures (C2SP
// tlog-cosignature v1, signature type 0x04) for note.Open.
type cosigVerifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
	// time is the timestamp of the last signature that verified.
	time *uint64
}

func (v cosigVerifier) Name() string    { return v.name }
func (v cosigVerifier) KeyHash() uint32 { return v.hash }

func (v cosigVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	t := binary.BigEndian.Uint64(sig[:8])
	if t == 0 || t > 1<<63-1 {
		return false
	}
	signed := append([]byte(fmt.Sprintf("cosignature/v1\ntime %d\n", t)), msg...)
	if !ed25519.Verify(v.key, signed, sig[8:]) {
		return false
	}
	*v.time = t
	return true
}

// newCosigVerifier parses <name>+<hex key ID>+base64(0x04 || key) and
// checks the key ID is SHA-256(name || "\n" || 0x04 || key)[:4].
func newCosigVerifier(vkey string) (cosigVerifier, error) {
	f := strings.Split(vkey, "+")
	if len(f) != 3 || len(f[1]) != 8 {
		return cosigVerifier{}, fmt.Errorf("malformed witness key")
	}
	id, err1 := hex.DecodeString(f[1])
	key, err2 := base64.StdEncoding.DecodeString(f[2])
	if err1 != nil || err2 != nil || len(key) != 1+ed25519.PublicKeySize || key[0] != 0x04 {
		return cosigVerifier{}, fmt.Errorf("malformed witness key")
	}
	h := sha256.Sum256(append([]byte(f[0]+"\n"), key...))
	if !bytes.Equal(h[:4], id) {
		return cosigVerifier{}, fmt.Errorf("witness key ID does not match its name and key")
	}
	return cosigVerifier{
		name: f[0],
		hash: binary.BigEndian.Uint32(id),
		key:  ed25519.PublicKey(key[1:]),
		time: new(uint64),
	}, nil
}

// checkCosigned opens the cosigned checkpoint with both keys: it must carry
// the same text as the checkpoint, and both signatures must verify.
func checkCosigned(dir string, logVerifier note.Verifier, text string) (string, error) {
	wkey, err := os.ReadFile(filepath.Join(dir, "witness-vkey"))
	if os.IsNotExist(err) {
		return "", nil
	} else if err != nil {
		return "", err
	}
	w, err := newCosigVerifier(strings.TrimSpace(string(wkey)))
	if err != nil {
		return "", err
	}
	msg, err := os.ReadFile(filepath.Join(dir, "cosigned"))
	if err != nil {
		return "", err
	}
	n, err := note.Open(msg, note.VerifierList(logVerifier, w))
	if err != nil {
		return "", fmt.Errorf("cosigned checkpoint: %v", err)
	}
	if n.Text != text {
		return "", fmt.Errorf("cosigned checkpoint: another text than the checkpoint's")
	}
	names := map[string]bool{}
	for _, s := range n.Sigs {
		names[s.Name] = true
	}
	if !names[w.name] || !names[logVerifier.Name()] || *w.time == 0 {
		return "", fmt.Errorf("cosigned checkpoint: missing the log's signature or the witness's cosignature")
	}
	return fmt.Sprintf(", cosigned by %s at %d", w.name, *w.time), nil
}

func parseHash(s string) (tlog.Hash, error) {
	var h tlog.Hash
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != tlog.HashSize {
		return h, fmt.Errorf("bad hash %q", s)
	}
	copy(h[:], b)
	return h, nil
}

func parseProof(s string) ([]tlog.Hash, error) {
	if s == "-" {
		return nil, nil
	}
	var p []tlog.Hash
	for _, f := range strings.Split(s, ",") {
		h, err := parseHash(f)
		if err != nil {
			return nil, err
		}
		p = append(p, h)
	}
	return p, nil
}

func sameHashes(a, b []tlog.Hash) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func verify(dir string) (string, error) {
	vkey, err := os.ReadFile(filepath.Join(dir, "vkey"))
	if err != nil {
		return "", err
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		return "", fmt.Errorf("verifier key: %v", err)
	}
	msg, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
	if err != nil {
		return "", err
	}
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		return "", fmt.Errorf("checkpoint signature: %v", err)
	}

	cosigned, err := checkCosigned(dir, verifier, n.Text)
	if err != nil {
		return "", err
	}

	// The checkpoint text: origin, size, root, then extension lines.
	lines := strings.Split(strings.TrimSuffix(n.Text, "\n"), "\n")
	if len(lines) < 3 {
		return "", fmt.Errorf("checkpoint has %d lines", len(lines))
	}
	origin := lines[0]
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 1 || strconv.FormatInt(size, 10) != lines[1] {
		return "", fmt.Errorf("checkpoint size %q", lines[1])
	}
	root, err := parseHash(lines[2])
	if err != nil {
		return "", fmt.Errorf("checkpoint root: %v", err)
	}

	tree := tlog.Tree{N: size, Hash: root}
	hr := tlog.TileHashReader(tree, dirTiles{dir, map[string][]byte{}})
	th, err := tlog.TreeHash(size, hr)
	if err != nil {
		return "", fmt.Errorf("tree hash from tiles: %v", err)
	}
	if th != root {
		return "", fmt.Errorf("tiles give root %v, checkpoint says %v", th, root)
	}

	// Every entry of every bundle hashes to its leaf hash in the tiles.
	records := make([]tlog.Hash, 0, size)
	for k := int64(0); k*(1<<height) < size; k++ {
		w := size - k*(1<<height)
		if w > 1<<height {
			w = 1 << height
		}
		t := tlog.Tile{H: height, L: 0, N: k, W: int(w)}
		p, err := c2spPath(t)
		if err != nil {
			return "", err
		}
		bundlePath := "tile/entries/" + strings.TrimPrefix(p, "tile/0/")
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(bundlePath)))
		if err != nil {
			return "", err
		}
		var entries [][]byte
		for len(data) > 0 {
			if len(data) < 2 {
				return "", fmt.Errorf("%s: truncated length", bundlePath)
			}
			l := int(binary.BigEndian.Uint16(data))
			if len(data) < 2+l {
				return "", fmt.Errorf("%s: truncated entry", bundlePath)
			}
			entries = append(entries, data[2:2+l])
			data = data[2+l:]
		}
		if int64(len(entries)) != w {
			return "", fmt.Errorf("%s: %d entries, want %d", bundlePath, len(entries), w)
		}
		indexes := make([]int64, w)
		for i := range indexes {
			indexes[i] = tlog.StoredHashIndex(0, k*(1<<height)+int64(i))
		}
		hashes, err := hr.ReadHashes(indexes)
		if err != nil {
			return "", fmt.Errorf("%s: leaf hashes: %v", bundlePath, err)
		}
		for i, e := range entries {
			rh := tlog.RecordHash(e)
			if rh != hashes[i] {
				return "", fmt.Errorf("%s: entry %d does not hash to its leaf", bundlePath, i)
			}
			// TileHashReader does not authenticate every tile it returns
			// hashes from (see the package comment), so the first entry of
			// each bundle is also proved included in the signed root from
			// the same tile data. Its proof depends on every other hash of
			// its level-0 tile and of the tiles above it, so the check
			// authenticates the whole tile the other entries are compared
			// with.
			if i == 0 {
				idx := k * (1 << height)
				p, err := tlog.ProveRecord(size, idx, hr)
				if err != nil {
					return "", fmt.Errorf("proving entry %d from the tiles: %v", idx, err)
				}
				if err := tlog.CheckRecord(p, size, root, idx, rh); err != nil {
					return "", fmt.Errorf("entry %d is not in the signed tree: %v", idx, err)
				}
			}
			records = append(records, rh)
		}
	}

	pf, err := os.Open(filepath.Join(dir, "proofs"))
	if err != nil {
		return "", err
	}
	defer pf.Close()
	inclusions, consistencies := 0, 0
	sc := bufio.NewScanner(pf)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "inclusion":
			i, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || i < 0 || i >= size {
				return "", fmt.Errorf("inclusion index %q", f[1])
			}
			p, err := parseProof(f[2])
			if err != nil {
				return "", err
			}
			if err := tlog.CheckRecord(tlog.RecordProof(p), size, root, i, records[i]); err != nil {
				return "", fmt.Errorf("inclusion of %d: %v", i, err)
			}
			gp, err := tlog.ProveRecord(size, i, hr)
			if err != nil {
				return "", fmt.Errorf("proving inclusion of %d: %v", i, err)
			}
			if !sameHashes(gp, p) {
				return "", fmt.Errorf("inclusion of %d: proof differs from x/mod's", i)
			}
			inclusions++
		case len(f) == 4 && f[0] == "consistency":
			old, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || old < 1 || old >= size {
				return "", fmt.Errorf("consistency old size %q", f[1])
			}
			oldRoot, err := parseHash(f[2])
			if err != nil {
				return "", err
			}
			p, err := parseProof(f[3])
			if err != nil {
				return "", err
			}
			if err := tlog.CheckTree(tlog.TreeProof(p), size, root, old, oldRoot); err != nil {
				return "", fmt.Errorf("consistency from %d: %v", old, err)
			}
			oh, err := tlog.TreeHash(old, hr)
			if err != nil {
				return "", fmt.Errorf("tree hash at %d: %v", old, err)
			}
			if oh != oldRoot {
				return "", fmt.Errorf("root at %d is %v, claimed %v", old, oh, oldRoot)
			}
			gp, err := tlog.ProveTree(size, old, hr)
			if err != nil {
				return "", fmt.Errorf("proving consistency from %d: %v", old, err)
			}
			if !sameHashes(gp, p) {
				return "", fmt.Errorf("consistency from %d: proof differs from x/mod's", old)
			}
			consistencies++
		case len(bytes.TrimSpace(sc.Bytes())) == 0:
		default:
			return "", fmt.Errorf("proofs: bad line %q", sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s size %d: signature, root from tiles, %d entries, %d inclusion proofs, %d consistency proofs%s",
		origin, size, len(records), inclusions, consistencies, cosigned), nil
}
