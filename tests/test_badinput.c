/* test_badinput.c - a real cellard child on 127.0.0.1 (port 0, temporary
 * flash image) against raw sockets: malformed frames, absurd length
 * prefixes, unknown messages, bad paths, silent and slow peers, too many
 * connections. Each bad peer gets a clear error or a closed connection, a
 * well-behaved client keeps being served all along, and nothing on flash
 * changes.
 *
 * The cellard binary: $CELLARD, else ../cellard next to this test's
 * directory (build/san/tests/.. -> build/san/cellard). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "codec.h"

static char dir[PATH_MAX], img[PATH_MAX + 32], logpath[PATH_MAX + 32];
static pid_t child = -1;
static uint16_t port;
static int good = -1; /* the well-behaved client */
static uint32_t good_id = 1;
static int good_served;
static cellar_Request rq;
static cellar_Response rs;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void cleanup(void)
{
    if (child > 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        child = -1;
    }
}

static void die(const char *what)
{
    fprintf(stderr, "test_badinput: %s\n", what);
    cleanup();
    exit(1);
}

static const char *cellard_path(char *buf, size_t cap)
{
    const char *env = getenv("CELLARD");
    if (env && *env)
        return env;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return "build/san/cellard";
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = 0; /* .../build/san/tests */
    slash = strrchr(exe, '/');
    if (slash)
        *slash = 0; /* .../build/san */
    snprintf(buf, cap, "%s/cellard", exe);
    return buf;
}

static void start_cellard(void)
{
    char pathbuf[PATH_MAX + 16];
    const char *bin = cellard_path(pathbuf, sizeof(pathbuf));
    int out[2];
    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "test_badinput: no cellard at %s\n", bin);
        exit(1);
    }
    if (pipe(out))
        die("pipe");
    child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        int lf = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(out[1], 1);
        if (lf >= 0)
            dup2(lf, 2);
        close(out[0]);
        execl(bin, bin, "--flash", img, "--listen", "tcp://127.0.0.1:0",
              "--idle-timeout", "2", "--device-id", "badinput", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    /* "cellard: listening on tcp://127.0.0.1:PORT" */
    char line[512];
    size_t n = 0;
    long long deadline = now_ms() + 30000;
    while (n < sizeof(line) - 1 && now_ms() < deadline) {
        struct pollfd p = { .fd = out[0], .events = POLLIN };
        if (poll(&p, 1, 500) <= 0)
            continue;
        ssize_t k = read(out[0], line + n, 1);
        if (k <= 0)
            break;
        if (line[n] == '\n') {
            line[n] = 0;
            break;
        }
        n++;
    }
    line[n] = 0;
    close(out[0]);
    const char *at = strstr(line, "listening on tcp://127.0.0.1:");
    if (!at)
        die("cellard did not print its listening URL");
    port = (uint16_t)atoi(at + strlen("listening on tcp://127.0.0.1:"));
    if (!port)
        die("bad port");
}

static int connect_raw(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        die("connect");
    return fd;
}

static int send_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read exactly len bytes within timeout_ms. Returns 0, 1 on EOF, -1 on
 * timeout or error. */
static int recv_all(int fd, void *buf, size_t len, int timeout_ms)
{
    uint8_t *p = buf;
    long long deadline = now_ms() + timeout_ms;
    while (len) {
        int left = (int)(deadline - now_ms());
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        if (left <= 0 || poll(&pf, 1, left) <= 0)
            return -1;
        ssize_t n = recv(fd, p, len, 0);
        if (n == 0)
            return 1;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == ECONNRESET ? 1 : -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read one Response into rs. Returns 0, 1 on EOF, -1 on timeout/garbage. */
static int read_resp(int fd, int timeout_ms)
{
    static uint8_t body[CODEC_MAX_FRAME];
    uint8_t hdr[4];
    int rc = recv_all(fd, hdr, 4, timeout_ms);
    if (rc)
        return rc;
    uint32_t n = codec_get_len(hdr);
    if (n == 0 || n > CODEC_MAX_FRAME)
        return -1;
    if (recv_all(fd, body, n, timeout_ms))
        return -1;
    memset(&rs, 0, sizeof(rs));
    return codec_decode_response(&rs, body, n, NULL) ? -1 : 0;
}

/* Is the connection closed by the peer within timeout_ms (reading and
 * dropping anything before the end)? */
static bool closed_within(int fd, int timeout_ms)
{
    uint8_t junk[4096];
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        int left = (int)(deadline - now_ms());
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        if (left <= 0 || poll(&pf, 1, left) <= 0)
            return false;
        ssize_t n = recv(fd, junk, sizeof(junk), 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
        if (n < 0 && errno != EINTR)
            return false;
    }
}

static int send_req(int fd, uint32_t id)
{
    static uint8_t buf[CODEC_BUF_MIN];
    rq.id = id;
    int n = codec_encode_request(&rq, buf, sizeof(buf));
    return n < 0 ? -1 : send_all(fd, buf, (size_t)n);
}

/* One round trip on the good client. */
static int good_call(void)
{
    uint32_t id = ++good_id;
    if (send_req(good, id) || read_resp(good, 10000) || rs.id != id)
        return -1;
    good_served++;
    return rs.has_error ? (int)rs.error.code : 0;
}

static int good_ping(void)
{
    memset(&rq, 0, sizeof(rq));
    rq.which_body = cellar_Request_ping_tag;
    rq.body.ping.payload.size = 3;
    memcpy(rq.body.ping.payload.bytes, "hey", 3);
    int rc = good_call();
    if (rc == 0 && (rs.which_body != cellar_Request_ping_tag ||
                    rs.body.ping.payload.size != 3))
        return -1;
    return rc;
}

/* Wait, keeping the good client busy (and so alive past the idle
 * timeout). Returns the number of failed pings. */
static int busy_wait(int ms)
{
    int bad = 0;
    long long end = now_ms() + ms;
    while (now_ms() < end) {
        if (good_ping() != 0)
            bad++;
        usleep(200 * 1000);
    }
    return bad;
}

static uint8_t *read_image(size_t *len)
{
    FILE *f = fopen(img, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Send bytes on a fresh connection; expect one error reply with `code` and
 * id `id`, and then (if must_close) the connection closed. */
static void expect_error(const uint8_t *bytes, size_t len, cellar_Code code,
                         uint32_t id, bool must_close, const char *what)
{
    int fd = connect_raw();
    bool ok = send_all(fd, bytes, len) == 0 && read_resp(fd, 10000) == 0 &&
              rs.has_error && rs.error.code == code && rs.id == id &&
              rs.error.message[0] != 0;
    if (!ok)
        fprintf(stderr, "%s: expected %d id %u, got %s %d id %u \"%s\"\n",
                what, (int)code, id, rs.has_error ? "error" : "ok",
                (int)rs.error.code, rs.id, rs.error.message);
    CHECK(ok);
    if (must_close) {
        CHECK(closed_within(fd, 5000));
    } else {
        /* still usable */
        memset(&rq, 0, sizeof(rq));
        rq.which_body = cellar_Request_ping_tag;
        CHECK(send_req(fd, 4242) == 0 && read_resp(fd, 10000) == 0 &&
              rs.id == 4242 && !rs.has_error);
    }
    close(fd);
    CHECK_EQ(good_ping(), 0);
}

static void frame(uint8_t *out, size_t body_len)
{
    codec_put_len(out, (uint32_t)body_len);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof(dir), "%s/cellar-badinput-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir))
        die("mkdtemp");
    snprintf(img, sizeof(img), "%s/flash.img", dir);
    snprintf(logpath, sizeof(logpath), "%s/cellard.log", dir);
    start_cellard();

    /* The good client: hello, and a file to read back at the end. */
    good = connect_raw();
    memset(&rq, 0, sizeof(rq));
    rq.which_body = cellar_Request_hello_tag;
    rq.body.hello.version = 1;
    strcpy(rq.body.hello.client, "test_badinput");
    CHECK_EQ(good_call(), 0);
    CHECK(strcmp(rs.body.hello.device, "badinput") == 0);
    CHECK_EQ(rs.body.hello.max_frame, CODEC_MAX_FRAME);
    memset(&rq, 0, sizeof(rq));
    rq.which_body = cellar_Request_open_tag;
    strcpy(rq.body.open.path, "/usr/keep.txt");
    rq.body.open.flags = cellar_OpenFlags_O_WRITE | cellar_OpenFlags_O_CREATE;
    CHECK_EQ(good_call(), 0);
    uint32_t h = rs.body.open.handle;
    memset(&rq, 0, sizeof(rq));
    rq.which_body = cellar_Request_write_tag;
    rq.body.write.handle = h;
    rq.body.write.data.size = 11;
    memcpy(rq.body.write.data.bytes, "hello flash", 11);
    CHECK_EQ(good_call(), 0);
    memset(&rq, 0, sizeof(rq));
    rq.which_body = cellar_Request_close_tag;
    rq.body.close.handle = h;
    CHECK_EQ(good_call(), 0);

    size_t before_len;
    uint8_t *before = read_image(&before_len);
    CHECK(before != NULL && before_len == 4u << 20);

    /* Silent and slow peers start now and run while the rest goes on. */
    int silent = connect_raw();
    int slow = connect_raw();
    long long slow_start = now_ms();
    uint8_t slow_bytes[6] = { 10, 0, 0, 0, 0x08, 0x01 }; /* a 10-byte frame */
    int slow_sent = 0;

    /* 1. length 0 */
    uint8_t zero[4] = { 0, 0, 0, 0 };
    expect_error(zero, 4, cellar_Code_EPROTO, 0, true, "length 0");
    /* 2. 4 GiB - 1 length prefix, with some body behind it */
    uint8_t huge[64];
    memset(huge, 'A', sizeof(huge));
    codec_put_len(huge, 0xffffffffu);
    expect_error(huge, sizeof(huge), cellar_Code_EMSGSIZE, 0, true, "4 GiB");
    /* 3. max + 1 */
    uint8_t over[4];
    codec_put_len(over, CODEC_MAX_FRAME + 1);
    expect_error(over, 4, cellar_Code_EMSGSIZE, 0, true, "max+1");
    /* 4. garbage in a well-formed frame: EPROTO, connection kept */
    uint8_t garbage[4 + 12] = { 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff,
                                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 };
    frame(garbage, 12);
    expect_error(garbage, sizeof(garbage), cellar_Code_EPROTO, 0, false,
                 "garbage");
    /* 5. unknown message type (field 33), id echoed */
    uint8_t unk[] = { 0, 0, 0, 0, 0x08, 0x2a, 0x8a, 0x02, 0x01, 0x00 };
    frame(unk, sizeof(unk) - 4);
    expect_error(unk, sizeof(unk), cellar_Code_EPROTO, 42, false, "unknown");
    /* 6. wrong field type: stat.path as a varint */
    uint8_t wrong[] = { 0, 0, 0, 0, 0x08, 0x2b, 0x62, 0x02, 0x08, 0x07 };
    frame(wrong, sizeof(wrong) - 4);
    expect_error(wrong, sizeof(wrong), cellar_Code_EPROTO, 43, false, "wire");
    /* 7. bad paths: an escape, a NUL, invalid UTF-8 */
    uint8_t esc[64];
    memset(&rq, 0, sizeof(rq));
    rq.id = 44;
    rq.which_body = cellar_Request_open_tag;
    strcpy(rq.body.open.path, "/usr/../../etc/passwd");
    rq.body.open.flags = cellar_OpenFlags_O_WRITE | cellar_OpenFlags_O_CREATE;
    int n = codec_encode_request(&rq, esc, sizeof(esc));
    expect_error(esc, (size_t)n, cellar_Code_EINVAL, 44, false, "escape");
    uint8_t nul[] = { 0, 0, 0, 0, 0x08, 0x2d, 0x62, 0x09, 0x0a, 0x07,
                      '/', 'u', 's', 'r', '/', 0, 'x' };
    frame(nul, sizeof(nul) - 4);
    expect_error(nul, sizeof(nul), cellar_Code_EINVAL, 45, false, "nul");
    memset(&rq, 0, sizeof(rq));
    rq.which_body = cellar_Request_open_tag;
    rq.body.open.flags = cellar_OpenFlags_O_WRITE | cellar_OpenFlags_O_CREATE;
    strcpy(rq.body.open.path, "/usr/\xff.txt");
    rq.id = 46;
    n = codec_encode_request(&rq, esc, sizeof(esc));
    expect_error(esc, (size_t)n, cellar_Code_EINVAL, 46, false, "utf8");
    /* 8. a write to the read-only backup partition */
    memset(&rq, 0, sizeof(rq));
    rq.which_body = cellar_Request_open_tag;
    rq.body.open.flags = cellar_OpenFlags_O_WRITE | cellar_OpenFlags_O_CREATE;
    strcpy(rq.body.open.path, "/bak/x");
    rq.id = 47;
    n = codec_encode_request(&rq, esc, sizeof(esc));
    expect_error(esc, (size_t)n, cellar_Code_EACCES, 47, false, "bak");
    /* 9. half a frame, then a reset */
    {
        int fd = connect_raw();
        uint8_t half[] = { 100, 0, 0, 0, 0x08, 0x01, 0x5a };
        CHECK(send_all(fd, half, sizeof(half)) == 0);
        struct linger lg = { .l_onoff = 1, .l_linger = 0 };
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd);
        CHECK_EQ(good_ping(), 0);
    }
    /* 10. a frame split across many tiny sends still works */
    {
        int fd = connect_raw();
        uint8_t buf[64];
        memset(&rq, 0, sizeof(rq));
        rq.id = 48;
        rq.which_body = cellar_Request_stat_tag;
        strcpy(rq.body.stat.path, "/usr/keep.txt");
        n = codec_encode_request(&rq, buf, sizeof(buf));
        for (int i = 0; i < n; i++) {
            CHECK(send_all(fd, buf + i, 1) == 0);
            usleep(2000);
        }
        CHECK(read_resp(fd, 10000) == 0 && rs.id == 48 && !rs.has_error &&
              rs.body.stat.info.size == 11);
        close(fd);
    }

    /* 11. the slow peer: one byte per second, bounded; meanwhile the good
     * client is served. The idle timeout (2 s) must end it. */
    bool slow_closed = false, slow_error = false;
    while (now_ms() - slow_start < 8000 && !slow_closed) {
        if (slow_sent < (int)sizeof(slow_bytes) &&
            now_ms() - slow_start >= 1000LL * slow_sent) {
            if (send(slow, slow_bytes + slow_sent, 1, MSG_NOSIGNAL) == 1)
                slow_sent++;
        }
        struct pollfd pf = { .fd = slow, .events = POLLIN };
        if (poll(&pf, 1, 0) == 1) {
            int rc = read_resp(slow, 2000);
            if (rc == 0 && rs.has_error &&
                rs.error.code == cellar_Code_ETIMEDOUT && rs.id == 0)
                slow_error = true;
            if (rc == 1 || closed_within(slow, 3000))
                slow_closed = true;
        }
        CHECK_EQ(good_ping(), 0);
        usleep(100 * 1000);
    }
    CHECK(slow_error);
    CHECK(slow_closed);
    CHECK(slow_sent >= 2);
    close(slow);
    /* 12. the silent peer got the same treatment */
    CHECK(read_resp(silent, 3000) == 0 && rs.has_error &&
          rs.error.code == cellar_Code_ETIMEDOUT);
    CHECK(closed_within(silent, 3000));
    close(silent);

    /* 13. more connections than the service takes (64): the extra ones
     * get ENOMEM and are closed; the good client is unaffected. */
    int many[70];
    int refused = 0;
    for (int i = 0; i < 70; i++)
        many[i] = connect_raw();
    CHECK_EQ(busy_wait(1000), 0);
    for (int i = 0; i < 70; i++) {
        struct pollfd pf = { .fd = many[i], .events = POLLIN };
        if (poll(&pf, 1, 0) == 1 && read_resp(many[i], 1000) == 0 &&
            rs.has_error && rs.error.code == cellar_Code_ENOMEM)
            refused++;
    }
    CHECK(refused >= 6);
    CHECK_EQ(good_ping(), 0);
    for (int i = 0; i < 70; i++)
        close(many[i]);
    CHECK_EQ(busy_wait(300), 0);

    /* The good client was served all along, and reads its file back. */
    memset(&rq, 0, sizeof(rq));
    rq.which_body = cellar_Request_hash_tag;
    strcpy(rq.body.hash.path, "keep.txt");
    CHECK_EQ(good_call(), 0);
    CHECK_EQ(rs.body.hash.length, 11);
    CHECK(good_served > 30);

    /* Nothing on flash changed. */
    size_t after_len;
    uint8_t *after = read_image(&after_len);
    CHECK(after != NULL && after_len == before_len &&
          memcmp(before, after, before_len) == 0);
    free(before);
    free(after);
    close(good);

    /* Clean shutdown on SIGTERM: exit 0. */
    kill(child, SIGTERM);
    int st = 0;
    long long deadline = now_ms() + 20000;
    pid_t w = 0;
    while (now_ms() < deadline && (w = waitpid(child, &st, WNOHANG)) == 0)
        usleep(20000);
    CHECK(w == child);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    if (w == child)
        child = -1;
    cleanup();

    /* One log line per connection, errors logged. */
    size_t loglen;
    FILE *lf = fopen(logpath, "r");
    static char logtext[1 << 20];
    loglen = lf ? fread(logtext, 1, sizeof(logtext) - 1, lf) : 0;
    if (lf)
        fclose(lf);
    logtext[loglen] = 0;
    CHECK(strstr(logtext, ": open") != NULL);
    CHECK(strstr(logtext, "close (bad frame") != NULL);
    CHECK(strstr(logtext, "close (idle timeout") != NULL);
    CHECK(strstr(logtext, "EPROTO") != NULL);
    CHECK(strstr(logtext, "unmounted /usr") != NULL);
    if (check_fail_)
        fprintf(stderr, "cellard log kept in %s\n", logpath);
    else {
        unlink(img);
        unlink(logpath);
        rmdir(dir);
    }
    return check_summary("badinput");
}
