#!/usr/bin/python3
"""A FUSE file system that loses everything not made durable, for power-loss tests.

    lazyfs.py BACKING MOUNTPOINT [--ready FILE]

Everything written through MOUNTPOINT lives in this process's memory until
it is made durable the way POSIX says it must be; only then does it reach
BACKING. Killing this process (SIGKILL) is a power cut: the memory is gone,
and mounting BACKING again shows exactly the durable state.

What is modelled (strictly, more strictly than ext4 in practice):

* File data. write() and truncate() change an in-memory overlay of 4 KiB
  pages (plus the file's current size) over the file's durable contents.
  fsync() and fdatasync() of that file write the overlay and the size to
  BACKING; both count as making the file's data and size durable (what
  fdatasync promises for a size change that later reads need). close(),
  flush and other files' syncs make nothing durable.
* Names. Every directory keeps its current entries in memory. fsync() of a
  directory makes its current entries (name -> inode) durable; until then
  a create, mkdir, rename, link-less unlink or rmdir in that directory is
  lost by a cut. A rename between two directories is durable in each of
  them when each is synced (so a cut may show the file in both or neither,
  as a strict reading of POSIX allows). A new directory's own entries are
  durable only once it is synced, and it exists at all only once its parent
  is synced.
* Inodes. A file's data is kept by inode, not by name: a file synced under
  a temporary name and renamed is durable under the new name as soon as
  the directory is synced. Inodes no durable name reaches are removed when
  the file system is mounted.
* Not modelled: modes, owners and times are kept with the names (what the
  last directory sync saw), not on their own; torn pages (a page is either
  the old or the new one, in whole); reordering within one sync (a cut in
  the middle of a sync, which never returned, may leave any subset of its
  pages written); xattrs, hard links, symlinks and special files (refused).
  Locks (flock, fcntl) are left to the kernel, which keeps them locally.

BACKING holds `manifest.json` (the durable directory entries) and
`data/<inode>` (each inode's durable contents). BACKING itself is never
fsynced: the machine under test does not lose power, only this file system
pretends to.

What the servers do, and all of it is covered: redb (4.x) and the
write-ahead log use pread/pwrite at offsets, set_len (truncate), fsync and
fdatasync, and byte-range and flock locks; secret files are written to a
temporary name, fsynced, renamed and the directory fsynced. Neither uses
mmap (a shared writable mapping would reach this layer only at writeback,
like any write, and become durable only with an fsync).

--ready FILE: created once the file system is mounted and answering, so
that a caller can wait for it.

Needs Debian's python3-fusepy (module `fusepy`, over libfuse 2).
"""

import errno
import json
import os
import stat
import sys
import threading
import time

try:
    from fusepy import FUSE, FuseOSError, Operations
except ImportError:  # the upstream name
    from fuse import FUSE, FuseOSError, Operations

PAGE = 4096
ROOT = 1


class Node:
    """An inode: a file (pages over durable data) or a directory."""

    def __init__(self, ino, is_dir, mode, durable_size=0):
        self.ino = ino
        self.is_dir = is_dir
        self.mode = mode
        now = time.time()
        self.atime = self.mtime = self.ctime = now
        self.uid = os.getuid()
        self.gid = os.getgid()
        # Directory: name -> Node, the current entries.
        self.entries = {} if is_dir else None
        # File: the current size, dirty pages, and how much of the durable
        # data still shows (bytes at and after `keep` read as zeros).
        self.size = durable_size
        self.durable_size = durable_size
        self.keep = durable_size
        self.pages = {}
        self.fd = None


class LazyFS(Operations):
    use_ns = False

    def __init__(self, backing, ready):
        self.backing = os.path.abspath(backing)
        self.ready = ready
        self.mutex = threading.RLock()
        self.data_dir = os.path.join(self.backing, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.manifest_path = os.path.join(self.backing, "manifest.json")
        self.handles = {}
        self.next_fh = 1
        self.stats = {"syncs": 0, "dirsyncs": 0, "pages_synced": 0}
        self._load()

    # ---- durable state -------------------------------------------------

    def _load(self):
        """The tree as the durable state describes it; unreachable inodes go."""
        if os.path.exists(self.manifest_path):
            with open(self.manifest_path) as f:
                m = json.load(f)
        else:
            m = {"next_ino": ROOT + 1, "nodes": {str(ROOT): {"dir": True, "mode": 0o755}},
                 "dirs": {}}
        self.next_ino = m["next_ino"]
        meta = m["nodes"]
        self.durable_dirs = {}
        self.durable_nodes = {}
        nodes = {}

        def make(ino):
            info = meta[str(ino)]
            if info["dir"]:
                mode = stat.S_IFDIR | info["mode"]
                node = Node(ino, True, mode)
            else:
                path = os.path.join(self.data_dir, str(ino))
                size = os.path.getsize(path) if os.path.exists(path) else 0
                node = Node(ino, False, stat.S_IFREG | info["mode"], size)
            nodes[ino] = node
            self.durable_nodes[str(ino)] = info
            return node

        self.root = make(ROOT)
        todo = [self.root]
        seen = set()
        while todo:
            d = todo.pop()
            if d.ino in seen:
                continue
            seen.add(d.ino)
            entries = m["dirs"].get(str(d.ino), {})
            self.durable_dirs[str(d.ino)] = dict(entries)
            for name, ino in entries.items():
                child = nodes.get(ino) or make(ino)
                d.entries[name] = child
                if child.is_dir:
                    todo.append(child)
        for name in os.listdir(self.data_dir):
            if not name.isdigit() or int(name) not in nodes:
                os.unlink(os.path.join(self.data_dir, name))
        self._write_manifest()

    def _write_manifest(self):
        m = {"next_ino": self.next_ino, "nodes": self.durable_nodes, "dirs": self.durable_dirs}
        tmp = self.manifest_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(m, f)
        os.replace(tmp, self.manifest_path)

    def _fd(self, node):
        if node.fd is None:
            node.fd = os.open(os.path.join(self.data_dir, str(node.ino)), os.O_RDWR | os.O_CREAT,
                              0o600)
        return node.fd

    def _durable_bytes(self, node, offset, length):
        """Bytes [offset, offset+length) of what shows of the durable data, zero-padded."""
        limit = min(node.keep, node.durable_size)
        out = b""
        if offset < limit and length > 0:
            out = os.pread(self._fd(node), min(length, limit - offset), offset)
        return out + bytes(length - len(out))

    def _sync_file(self, node):
        if node.is_dir:
            return
        if not node.pages and node.keep == node.durable_size == node.size:
            return
        fd = self._fd(node)
        if node.keep < node.durable_size:
            os.ftruncate(fd, node.keep)
        for pno in sorted(node.pages):
            start = pno * PAGE
            if start >= node.size:
                continue
            page = node.pages[pno]
            os.pwrite(fd, bytes(page[: min(PAGE, node.size - start)]), start)
        os.ftruncate(fd, node.size)
        self.stats["pages_synced"] += len(node.pages)
        node.pages = {}
        node.durable_size = node.keep = node.size
        self.stats["syncs"] += 1

    def _sync_dir(self, node):
        entries = {}
        for name, child in node.entries.items():
            entries[name] = child.ino
            self.durable_nodes[str(child.ino)] = {
                "dir": child.is_dir, "mode": stat.S_IMODE(child.mode)}
        self.durable_dirs[str(node.ino)] = entries
        self.durable_nodes[str(node.ino)] = {"dir": True, "mode": stat.S_IMODE(node.mode)}
        self._write_manifest()
        self.stats["dirsyncs"] += 1

    # ---- lookup ----------------------------------------------------------

    def _resolve(self, path):
        node = self.root
        for part in path.split("/"):
            if not part:
                continue
            if not node.is_dir:
                raise FuseOSError(errno.ENOTDIR)
            node = node.entries.get(part)
            if node is None:
                raise FuseOSError(errno.ENOENT)
        return node

    def _parent(self, path):
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self._resolve(head or "/")
        if not parent.is_dir:
            raise FuseOSError(errno.ENOTDIR)
        return parent, name

    def _node(self, path, fh):
        if fh:
            node = self.handles.get(fh)
            if node is not None:
                return node
        return self._resolve(path)

    def _new_node(self, is_dir, mode):
        node = Node(self.next_ino, is_dir, mode)
        self.next_ino += 1
        return node

    def _fh(self, node):
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = node
        return fh

    # ---- operations ------------------------------------------------------

    def init(self, path):
        if self.ready:
            with open(self.ready, "w") as f:
                f.write(str(os.getpid()))

    def getattr(self, path, fh=None):
        with self.mutex:
            node = self._node(path, fh)
            nlink = 2 + sum(1 for c in node.entries.values() if c.is_dir) if node.is_dir else 1
            size = 4096 if node.is_dir else node.size
            return {
                "st_mode": node.mode, "st_nlink": nlink, "st_size": size,
                "st_uid": node.uid, "st_gid": node.gid, "st_atime": node.atime,
                "st_mtime": node.mtime, "st_ctime": node.ctime,
                "st_blocks": (size + 511) // 512, "st_blksize": PAGE,
            }

    def access(self, path, amode):
        with self.mutex:
            self._resolve(path)
        return 0

    def readdir(self, path, fh):
        with self.mutex:
            node = self._resolve(path)
            if not node.is_dir:
                raise FuseOSError(errno.ENOTDIR)
            return [".", ".."] + list(node.entries)

    def opendir(self, path):
        with self.mutex:
            node = self._resolve(path)
            if not node.is_dir:
                raise FuseOSError(errno.ENOTDIR)
            return self._fh(node)

    def releasedir(self, path, fh):
        with self.mutex:
            self.handles.pop(fh, None)
        return 0

    def fsyncdir(self, path, datasync, fh):
        with self.mutex:
            self._sync_dir(self._node(path, fh))
        return 0

    def mkdir(self, path, mode):
        with self.mutex:
            parent, name = self._parent(path)
            if name in parent.entries:
                raise FuseOSError(errno.EEXIST)
            parent.entries[name] = self._new_node(True, stat.S_IFDIR | (mode & 0o7777))
            parent.mtime = time.time()
        return 0

    def rmdir(self, path):
        with self.mutex:
            parent, name = self._parent(path)
            node = parent.entries.get(name)
            if node is None:
                raise FuseOSError(errno.ENOENT)
            if not node.is_dir:
                raise FuseOSError(errno.ENOTDIR)
            if node.entries:
                raise FuseOSError(errno.ENOTEMPTY)
            del parent.entries[name]
        return 0

    def create(self, path, mode, fi=None):
        with self.mutex:
            parent, name = self._parent(path)
            node = parent.entries.get(name)
            if node is None:
                node = self._new_node(False, stat.S_IFREG | (mode & 0o7777))
                parent.entries[name] = node
                parent.mtime = time.time()
            elif node.is_dir:
                raise FuseOSError(errno.EISDIR)
            return self._fh(node)

    def open(self, path, flags):
        with self.mutex:
            node = self._resolve(path)
            if node.is_dir and (flags & (os.O_WRONLY | os.O_RDWR)):
                raise FuseOSError(errno.EISDIR)
            if flags & os.O_TRUNC and not node.is_dir:
                self._truncate(node, 0)
            return self._fh(node)

    def release(self, path, fh):
        with self.mutex:
            self.handles.pop(fh, None)
        return 0

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        with self.mutex:
            self._sync_file(self._node(path, fh))
        return 0

    def read(self, path, size, offset, fh):
        with self.mutex:
            node = self._node(path, fh)
            if node.is_dir:
                raise FuseOSError(errno.EISDIR)
            end = min(offset + size, node.size)
            if end <= offset:
                return b""
            buf = bytearray(self._durable_bytes(node, offset, end - offset))
            for pno in range(offset // PAGE, (end - 1) // PAGE + 1):
                page = node.pages.get(pno)
                if page is None:
                    continue
                start = max(offset, pno * PAGE)
                stop = min(end, (pno + 1) * PAGE)
                buf[start - offset: stop - offset] = page[start - pno * PAGE: stop - pno * PAGE]
            node.atime = time.time()
            return bytes(buf)

    def write(self, path, data, offset, fh):
        with self.mutex:
            node = self._node(path, fh)
            if node.is_dir:
                raise FuseOSError(errno.EISDIR)
            end = offset + len(data)
            view = memoryview(data)
            for pno in range(offset // PAGE, (end - 1) // PAGE + 1 if data else 0):
                page = node.pages.get(pno)
                if page is None:
                    page = bytearray(self._durable_bytes(node, pno * PAGE, PAGE))
                    node.pages[pno] = page
                start = max(offset, pno * PAGE)
                stop = min(end, (pno + 1) * PAGE)
                page[start - pno * PAGE: stop - pno * PAGE] = view[start - offset: stop - offset]
            node.size = max(node.size, end)
            node.mtime = time.time()
            return len(data)

    def _truncate(self, node, length):
        if length < node.size:
            node.keep = min(node.keep, length)
            for pno in [p for p in node.pages if p * PAGE >= length]:
                del node.pages[pno]
            page = node.pages.get(length // PAGE)
            if page is not None:
                cut = length % PAGE
                page[cut:] = bytes(PAGE - cut)
        node.size = length
        node.mtime = time.time()

    def truncate(self, path, length, fh=None):
        with self.mutex:
            node = self._node(path, fh)
            if node.is_dir:
                raise FuseOSError(errno.EISDIR)
            self._truncate(node, length)
        return 0

    def unlink(self, path):
        with self.mutex:
            parent, name = self._parent(path)
            node = parent.entries.get(name)
            if node is None:
                raise FuseOSError(errno.ENOENT)
            if node.is_dir:
                raise FuseOSError(errno.EISDIR)
            del parent.entries[name]
            parent.mtime = time.time()
        return 0

    def rename(self, old, new):
        with self.mutex:
            op, oname = self._parent(old)
            np, nname = self._parent(new)
            node = op.entries.get(oname)
            if node is None:
                raise FuseOSError(errno.ENOENT)
            target = np.entries.get(nname)
            if target is node:
                return 0
            if target is not None:
                if target.is_dir and not node.is_dir:
                    raise FuseOSError(errno.EISDIR)
                if node.is_dir and not target.is_dir:
                    raise FuseOSError(errno.ENOTDIR)
                if target.is_dir and target.entries:
                    raise FuseOSError(errno.ENOTEMPTY)
            del op.entries[oname]
            np.entries[nname] = node
            op.mtime = np.mtime = time.time()
        return 0

    def chmod(self, path, mode):
        with self.mutex:
            node = self._resolve(path)
            node.mode = (node.mode & ~0o7777) | (mode & 0o7777)
            node.ctime = time.time()
        return 0

    def chown(self, path, uid, gid):
        with self.mutex:
            node = self._resolve(path)
            if uid != -1 and uid != 0xFFFFFFFF:
                node.uid = uid
            if gid != -1 and gid != 0xFFFFFFFF:
                node.gid = gid
        return 0

    def utimens(self, path, times=None):
        with self.mutex:
            node = self._resolve(path)
            now = time.time()
            node.atime, node.mtime = times if times else (now, now)
        return 0

    def statfs(self, path):
        s = os.statvfs(self.backing)
        return {k: getattr(s, k) for k in (
            "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files",
            "f_flag", "f_frsize", "f_namemax")}

    def link(self, target, source):
        raise FuseOSError(errno.EPERM)

    def symlink(self, target, source):
        raise FuseOSError(errno.EPERM)

    def mknod(self, path, mode, dev):
        raise FuseOSError(errno.EPERM)


def main(argv):
    args = list(argv[1:])
    ready = None
    if "--ready" in args:
        i = args.index("--ready")
        ready = args[i + 1]
        del args[i: i + 2]
    if len(args) != 2:
        sys.stderr.write(__doc__)
        return 2
    backing, mountpoint = args
    FUSE(LazyFS(backing, ready), mountpoint, foreground=True, nothreads=False,
         big_writes=True, max_write=131072, fsname="lazyfs", subtype="lazyfs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
