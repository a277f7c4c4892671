/* latencyfs: a FUSE passthrough that makes every metadata request cost what it costs over a LAN.
 *
 *   latencyfs BACKING MOUNTPOINT -o delay_us=1000 [-o cache] [-o control=FILE] [-o max_threads=64] [-f]
 *
 * Every request that NFS would make a round trip for (lookup/getattr, readdir, open, create, mkdir, unlink,
 * rmdir, rename, link, symlink, readlink, chmod, chown, utimens, truncate, statfs, fsync, xattrs) sleeps
 * delay_us first; reads and writes of file data do not (bandwidth is not what is measured).  Without
 * `-o cache` the kernel's attribute and entry caches are off (every stat reaches us); with it they last 3 s,
 * as NFS's attribute cache does by default.  Built and mounted by bench/bench_nfs.py (libfuse3 from Debian:
 * a C passthrough adds no Python of its own to the measurement).  Requests run multi-threaded, as an NFS
 * server answers many at once.
 *
 * `-o control=FILE` (a file outside the mount) makes the bed a server that can die, for the tests of what a
 * sync does when its NFS server stops answering (hasync_pipeline_tests/faultfs.py switches it).  FILE holds
 * one word, read again (open, read, close by path: ~3 us here, a FUSE round trip is ~17 us) at the start of
 * every request, data and release included, so that `echo hang > FILE` and a write-to-temp-and-rename both
 * count from the next request on:
 *   ok    (or FILE missing, or any other content)  requests are answered as above;
 *   hang  every request waits, unanswered, for as long as FILE says hang (a hard mount whose server died:
 *         the caller waits), each in its own thread, which reads FILE again every 10 ms; when FILE says ok
 *         again the waiting requests go on and are answered normally (the server came back), when it says
 *         eio they fail as below.  A caller killed while it waits (SIGKILL, or a signal it has no handler
 *         for) is let go with EINTR, as a hard NFS mount lets a killed process go (without that, FUSE keeps
 *         it in D state until the answer comes); other signals do not end the wait.  Waiting requests hold
 *         daemon threads: pass max_threads (64, as bench_nfs.py) so that the kernel's interruptions of
 *         killed callers can still be read;
 *   eio   every request fails with EIO at once (a soft mount that timed out).
 * With control the requests that are only a round trip to the fault reach us too (flush on every close,
 * opendir, releasedir, fsyncdir, access); without it they are not implemented, as before, and what is left
 * of all this is one test of a pointer per request: the benchmarks measure what they measured.  While
 * requests hang: `fusermount3 -u -z` takes the mount away at once, but the waiting callers (and so the
 * daemon) stay until FILE says ok or the connection ends; aborting it (/sys/fs/fuse/connections/N/abort) or
 * killing the daemon fails them with ECONNABORTED at once; SIGTERM to the daemon fails them with ENOTCONN,
 * and the daemon unmounts and exits.
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

static struct options {
    const char *backing;
    int delay_us;
    int cache;
    const char *control;
} opts;

#define OPTION(t, p) {t, offsetof(struct options, p), 1}
static const struct fuse_opt option_spec[] = {OPTION("delay_us=%d", delay_us), OPTION("cache", cache),
                                              OPTION("control=%s", control), FUSE_OPT_END};

static void wait_rtt(void) {
    if (opts.delay_us > 0) {
        struct timespec ts = {opts.delay_us / 1000000, (opts.delay_us % 1000000) * 1000L};
        nanosleep(&ts, NULL);
    }
}

enum fault { FAULT_OK, FAULT_HANG, FAULT_EIO };

/* what the control file says now: opened by path every time, so a file replaced by rename counts at once */
static enum fault fault_now(void) {
    char word[16];
    int fd = open(opts.control, O_RDONLY | O_CLOEXEC);
    if (fd == -1) return FAULT_OK;
    ssize_t n = read(fd, word, sizeof(word) - 1);
    close(fd);
    if (n <= 0) return FAULT_OK;
    while (n > 0 && (word[n - 1] == '\n' || word[n - 1] == ' ' || word[n - 1] == '\r' || word[n - 1] == '\t')) n--;
    word[n] = '\0';
    if (strcmp(word, "hang") == 0) return FAULT_HANG;
    if (strcmp(word, "eio") == 0) return FAULT_EIO;
    return FAULT_OK;
}

/* whether the caller's thread is dying: a fatal signal shows as SIGKILL pending on each of its threads */
static int caller_killed(void) {
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)fuse_get_context()->pid);
    FILE *f = fopen(path, "re");
    if (f == NULL) return 1; /* gone already */
    int killed = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long long mask;
        if ((sscanf(line, "SigPnd: %llx", &mask) == 1 || sscanf(line, "ShdPnd: %llx", &mask) == 1) &&
            (mask & (1ULL << (SIGKILL - 1))))
            killed = 1;
    }
    fclose(f);
    return killed;
}

/* 0, or the error this request answers with: -EIO (eio), -EINTR (a killed caller), after any hang */
static int fault(void) {
    if (opts.control == NULL) return 0;
    for (;;) {
        switch (fault_now()) {
        case FAULT_OK:
            return 0;
        case FAULT_EIO:
            return -EIO;
        case FAULT_HANG:
            /* only a dying caller is let go, as by NFS; looked at directly, not only once the kernel's
             * interrupt has come: the kernel sends one per request, and under load one was seen to be lost
             * (the killed caller then waited for the server, in D state, as the CI once saw) */
            if (caller_killed()) return -EINTR;
            /* unmounted, aborted or told to stop: libfuse joins its threads before it exits, so none may wait */
            if (fuse_session_exited(fuse_get_session(fuse_get_context()->fuse))) return -ENOTCONN;
            nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        }
    }
}

/* a metadata request: the fault, then the round trip; a data request: the fault only */
#define ROUND_TRIP() \
    do { \
        int fault_ = fault(); \
        if (fault_) return fault_; \
        wait_rtt(); \
    } while (0)
#define FAULT() \
    do { \
        int fault_ = fault(); \
        if (fault_) return fault_; \
    } while (0)

static void real(char *out, const char *path) { snprintf(out, PATH_MAX, "%s%s", opts.backing, path); }

#define REAL(var, path) \
    char var[PATH_MAX]; \
    real(var, path)

static void *lfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
    (void)conn;
    cfg->use_ino = 1;
    cfg->hard_remove = 1;
    double t = opts.cache ? 3.0 : 0.0;
    cfg->entry_timeout = t;
    cfg->attr_timeout = t;
    cfg->negative_timeout = t;
    return NULL;
}

static int lfs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
    ROUND_TRIP();
    int r = fi ? fstat(fi->fh, st) : ({ REAL(p, path); lstat(p, st); });
    return r == -1 ? -errno : 0;
}

static int lfs_readlink(const char *path, char *buf, size_t size) {
    ROUND_TRIP();
    REAL(p, path);
    ssize_t n = readlink(p, buf, size - 1);
    if (n == -1) return -errno;
    buf[n] = '\0';
    return 0;
}

static int lfs_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off, struct fuse_file_info *fi,
                       enum fuse_readdir_flags flags) {
    (void)off;
    (void)fi;
    (void)flags;
    ROUND_TRIP();
    REAL(p, path);
    DIR *dp = opendir(p);
    if (dp == NULL) return -errno;
    struct dirent *de;
    while ((de = readdir(dp)) != NULL) {
        struct stat st;
        memset(&st, 0, sizeof(st));
        st.st_ino = de->d_ino;
        st.st_mode = de->d_type << 12;
        if (filler(buf, de->d_name, &st, 0, 0)) break;
    }
    closedir(dp);
    return 0;
}

static int lfs_mknod(const char *path, mode_t mode, dev_t rdev) {
    ROUND_TRIP();
    REAL(p, path);
    int r = S_ISFIFO(mode) ? mkfifo(p, mode) : mknod(p, mode, rdev);
    return r == -1 ? -errno : 0;
}

static int lfs_mkdir(const char *path, mode_t mode) {
    ROUND_TRIP();
    REAL(p, path);
    return mkdir(p, mode) == -1 ? -errno : 0;
}

static int lfs_unlink(const char *path) { ROUND_TRIP(); REAL(p, path); return unlink(p) == -1 ? -errno : 0; }
static int lfs_rmdir(const char *path) { ROUND_TRIP(); REAL(p, path); return rmdir(p) == -1 ? -errno : 0; }

static int lfs_symlink(const char *from, const char *to) {
    ROUND_TRIP();
    REAL(p, to);
    return symlink(from, p) == -1 ? -errno : 0;
}

static int lfs_rename(const char *from, const char *to, unsigned int flags) {
    ROUND_TRIP();
    REAL(a, from);
    REAL(b, to);
    return renameat2(AT_FDCWD, a, AT_FDCWD, b, flags) == -1 ? -errno : 0;
}

static int lfs_link(const char *from, const char *to) {
    ROUND_TRIP();
    REAL(a, from);
    REAL(b, to);
    return link(a, b) == -1 ? -errno : 0;
}

static int lfs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi) {
    ROUND_TRIP();
    if (fi) return fchmod(fi->fh, mode) == -1 ? -errno : 0;
    REAL(p, path);
    return chmod(p, mode) == -1 ? -errno : 0;
}

static int lfs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi) {
    ROUND_TRIP();
    if (fi) return fchown(fi->fh, uid, gid) == -1 ? -errno : 0;
    REAL(p, path);
    return lchown(p, uid, gid) == -1 ? -errno : 0;
}

static int lfs_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
    ROUND_TRIP();
    if (fi) return ftruncate(fi->fh, size) == -1 ? -errno : 0;
    REAL(p, path);
    return truncate(p, size) == -1 ? -errno : 0;
}

static int lfs_utimens(const char *path, const struct timespec ts[2], struct fuse_file_info *fi) {
    ROUND_TRIP();
    if (fi) return futimens(fi->fh, ts) == -1 ? -errno : 0;
    REAL(p, path);
    return utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW) == -1 ? -errno : 0;
}

static int lfs_create(const char *path, mode_t mode, struct fuse_file_info *fi) {
    ROUND_TRIP();
    REAL(p, path);
    int fd = open(p, fi->flags, mode);
    if (fd == -1) return -errno;
    fi->fh = fd;
    return 0;
}

static int lfs_open(const char *path, struct fuse_file_info *fi) {
    ROUND_TRIP();
    REAL(p, path);
    int fd = open(p, fi->flags);
    if (fd == -1) return -errno;
    fi->fh = fd;
    return 0;
}

static int lfs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
    (void)path;
    FAULT();
    ssize_t n = pread(fi->fh, buf, size, off);
    return n == -1 ? -errno : (int)n;
}

static int lfs_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
    (void)path;
    FAULT();
    ssize_t n = pwrite(fi->fh, buf, size, off);
    return n == -1 ? -errno : (int)n;
}

static int lfs_statfs(const char *path, struct statvfs *st) {
    ROUND_TRIP();
    REAL(p, path);
    return statvfs(p, st) == -1 ? -errno : 0;
}

static int lfs_release(const char *path, struct fuse_file_info *fi) {
    (void)path;
    int r = fault(); /* the backing file is closed whatever the fault: the kernel ignores the answer */
    close(fi->fh);
    return r;
}

static int lfs_fsync(const char *path, int datasync, struct fuse_file_info *fi) {
    (void)path;
    ROUND_TRIP();
    return (datasync ? fdatasync(fi->fh) : fsync(fi->fh)) == -1 ? -errno : 0;
}

static int lfs_setxattr(const char *path, const char *name, const char *value, size_t size, int flags) {
    ROUND_TRIP();
    REAL(p, path);
    return lsetxattr(p, name, value, size, flags) == -1 ? -errno : 0;
}

static int lfs_getxattr(const char *path, const char *name, char *value, size_t size) {
    ROUND_TRIP();
    REAL(p, path);
    ssize_t n = lgetxattr(p, name, value, size);
    return n == -1 ? -errno : (int)n;
}

static int lfs_listxattr(const char *path, char *list, size_t size) {
    ROUND_TRIP();
    REAL(p, path);
    ssize_t n = llistxattr(p, list, size);
    return n == -1 ? -errno : (int)n;
}

static int lfs_removexattr(const char *path, const char *name) {
    ROUND_TRIP();
    REAL(p, path);
    return lremovexattr(p, name) == -1 ? -errno : 0;
}

static off_t lfs_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi) {
    (void)path;
    FAULT();
    off_t r = lseek(fi->fh, off, whence);
    return r == -1 ? -errno : r;
}

/* with -o control only: requests that are nothing but a round trip to the fault */
static int lfs_flush(const char *path, struct fuse_file_info *fi) {
    (void)path, (void)fi;
    ROUND_TRIP();
    return 0;
}

static int lfs_opendir(const char *path, struct fuse_file_info *fi) {
    (void)path, (void)fi;
    ROUND_TRIP();
    return 0;
}

static int lfs_releasedir(const char *path, struct fuse_file_info *fi) {
    (void)path, (void)fi;
    FAULT();
    return 0;
}

static int lfs_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi) {
    (void)path, (void)datasync, (void)fi;
    ROUND_TRIP();
    return 0;
}

static int lfs_access(const char *path, int mask) {
    ROUND_TRIP();
    REAL(p, path);
    return access(p, mask) == -1 ? -errno : 0;
}

static struct fuse_operations ops = {
    .init = lfs_init,
    .getattr = lfs_getattr,
    .readlink = lfs_readlink,
    .readdir = lfs_readdir,
    .mknod = lfs_mknod,
    .mkdir = lfs_mkdir,
    .symlink = lfs_symlink,
    .unlink = lfs_unlink,
    .rmdir = lfs_rmdir,
    .rename = lfs_rename,
    .link = lfs_link,
    .chmod = lfs_chmod,
    .chown = lfs_chown,
    .truncate = lfs_truncate,
    .utimens = lfs_utimens,
    .open = lfs_open,
    .create = lfs_create,
    .read = lfs_read,
    .write = lfs_write,
    .statfs = lfs_statfs,
    .release = lfs_release,
    .fsync = lfs_fsync,
    .setxattr = lfs_setxattr,
    .getxattr = lfs_getxattr,
    .listxattr = lfs_listxattr,
    .removexattr = lfs_removexattr,
    .lseek = lfs_lseek,
};

/* the first non-option argument is the backing folder (taken out); the rest, options included, go to fuse_main */
static int take_backing(void *data, const char *arg, int key, struct fuse_args *outargs) {
    (void)data, (void)outargs;
    if (key != FUSE_OPT_KEY_NONOPT || opts.backing != NULL) return 1;
    static char backing[PATH_MAX];
    if (realpath(arg, backing) == NULL) {
        perror(arg);
        exit(2);
    }
    opts.backing = backing;
    return 0;
}

int main(int argc, char *argv[]) {
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    if (fuse_opt_parse(&args, &opts, option_spec, take_backing) == -1) return 1;
    if (opts.backing == NULL || args.argc < 2) {
        fprintf(stderr, "usage: latencyfs BACKING MOUNTPOINT [-o delay_us=N] [-o cache] [-o control=FILE]"
                        " [-o max_threads=N] [-f]\n");
        return 2;
    }
    if (opts.control != NULL) {
        if (opts.control[0] != '/') { /* the daemon works from / */
            static char control[2 * PATH_MAX];
            char cwd[PATH_MAX];
            if (getcwd(cwd, sizeof(cwd)) == NULL) {
                perror("getcwd");
                return 2;
            }
            snprintf(control, sizeof(control), "%s/%s", cwd, opts.control);
            opts.control = control;
        }
        ops.flush = lfs_flush;
        ops.opendir = lfs_opendir;
        ops.releasedir = lfs_releasedir;
        ops.fsyncdir = lfs_fsyncdir;
        ops.access = lfs_access;
    }
    fuse_opt_add_arg(&args, "-oallow_other,default_permissions");
    int r = fuse_main(args.argc, args.argv, &ops, NULL);
    fuse_opt_free_args(&args);
    return r;
}
