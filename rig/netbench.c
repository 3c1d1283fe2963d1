/* netbench: TCP throughput between dom0 and a far end, measured in one place (the client):
 *
 *     netbench serve [SINK_PORT SOURCE_PORT [ECHO_PORT]]
 *                                              the far end, for ever (default ports 5001
 *                                              5002, and 7 for UDP echo)
 *     netbench send HOST PORT BYTES            time BYTES sent to the far end's sink
 *     netbench recv HOST PORT BYTES            time BYTES received from the far end's source
 *     netbench udp HOST PORT COUNT             COUNT small datagrams echoed by the far end
 *
 * Wire protocol (our unikernel implements the far end too, so this is fixed):
 *   sink    The client sends bytes, then half-closes (shutdown SHUT_WR). The server reads to
 *           EOF, counting, then writes the count in decimal ASCII and "\n" ("33554432\n") and
 *           closes.
 *   source  The client writes a request line: a decimal byte count and "\n" (at most 20
 *           digits). The server sends exactly that many zero bytes, then closes. A request
 *           above 1 GiB (1073741824), empty, not decimal, or without "\n" within 32 bytes gets
 *           nothing: the server closes and logs why.
 *
 *   echo    UDP, port 7 (RFC 862): each datagram is sent back as it came. udp keeps
 *           UDP_WINDOW datagrams of UDP_SIZE bytes in flight, each carrying its sequence
 *           number, and sends the next as each echo arrives; an echo of another number (a
 *           late one, or a stranger's) is not counted. A window with no echo for 200 ms
 *           counts as lost and is sent afresh.
 *
 * serve listens on all IPv4 addresses, serves each port's connections one at a time (the two
 * ports concurrently), drops a connection that makes no progress for 60 s, and prints one line
 * per connection.
 * send and recv take a dotted IPv4 HOST and 1 <= BYTES <= 1073741824, and print one line:
 *     sent=<B> far_end_received=<N|none> seconds=<s> mib_s=<MiB/s>
 * timed from just before the first write to the arrival of the reply's "\n", or
 *     requested=<B> received=<N> seconds=<s> mib_s=<MiB/s>
 * timed from the arrival of the first read's bytes to that of the last; mib_s counts the
 * bytes after the first read (0.00 if all came in one). Exit status: 0 if the far end counted (send) or sent (recv) exactly BYTES;
 * 1 if the exchange ended with another count (the line, and the reason on stderr); 2 for bad
 * usage, a failed connection (10 s to connect), an I/O error or a transfer that made no
 * progress for 30 s (no line on stdout).
 * udp takes 1 <= COUNT <= 10000000 and prints
 *     sent=<S> echoed=<E> lost=<L> seconds=<s> pps=<E/s>
 * timed from the first datagram sent to the last echo; exit status 0 if COUNT came back, 1
 * if some were lost (the line, and how many on stderr), 2 as above (no echo at all for 10 s
 * ends it).
 *
 * Build (static, so the same binary runs in dom0 and a Linux domU):
 *     gcc -static -O2 -Wall -Wextra -Werror -o netbench rig/netbench.c */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1 << 20)
#define MAX_BYTES (UINT64_C(1) << 30)
#define MAX_LINE 32
#define MAX_DIGITS 20
#define SERVER_IDLE_S 60
#define CLIENT_IDLE_S 30
#define CONNECT_S 10
#define CLIENT_BUF (4 << 20)
#define ECHO_PORT 7
#define UDP_SIZE 64
#define UDP_WINDOW 8
#define UDP_MAX_COUNT 10000000
#define UDP_LOST_MS 200
#define UDP_IDLE_S 10

static char zeros[CHUNK];
// One process is either a server (only the sink thread reads bulk data) or a recv client.
static char inbuf[CHUNK];

static _Noreturn void usage(void)
{
    fputs("usage: netbench serve [SINK_PORT SOURCE_PORT [ECHO_PORT]]\n"
          "       netbench send HOST PORT BYTES\n"
          "       netbench recv HOST PORT BYTES\n"
          "       netbench udp HOST PORT COUNT\n"
          "HOST is a dotted IPv4 address, 1 <= BYTES <= 1073741824, 1 <= COUNT <= 10000000\n",
          stderr);
    exit(2);
}

static _Noreturn void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("netbench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

// The server's per-connection lines, from two threads: one locked, flushed write each.
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    flockfile(stdout);
    vprintf(fmt, ap);
    fflush(stdout);
    funlockfile(stdout);
    va_end(ap);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double mib_s(uint64_t bytes, double seconds)
{
    return seconds > 0 ? bytes / 1048576.0 / seconds : 0.0;
}

/* The idle timeouts are ours, not SO_RCVTIMEO/SO_SNDTIMEO: a blocking write with SO_SNDTIMEO
 * returns a short count at its timeout if it queued anything at all, so a peer that had
 * stopped reading held the client for several timeouts (three, on loopback). With
 * non-blocking sockets and poll, idle means that no byte moved. Our timeout is ETIME, to tell
 * it from the kernel's ETIMEDOUT. */
static const char *why(int err, const char *timed_out)
{
    return err == ETIME ? timed_out : strerror(err);
}

static int await(int fd, short events, int idle_s)
{
    struct pollfd p = { .fd = fd, .events = events };
    double deadline = now() + idle_s;
    for (;;) {
        double left = deadline - now();
        int r = poll(&p, 1, left > 0 ? (int)(left * 1000) + 1 : 0);
        if (r > 0) // ready, or POLLERR/POLLHUP, which the next read or write reports
            return 0;
        if (r == 0) {
            errno = ETIME;
            return -1;
        }
        if (errno != EINTR)
            return -1;
    }
}

// Parses len decimal digits into *out: -1 if any is not a digit, -2 if the value exceeds max.
static int parse_dec(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    if (len == 0)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned d = s[i] - '0';
        if (v > (max - d) / 10) // v * 10 + d > max, without overflowing
            return -2;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

// Reads what is there (0 at EOF), waiting at most idle_s for something to arrive.
static ssize_t read_some(int fd, void *buf, size_t n, int idle_s)
{
    for (;;) {
        ssize_t r = read(fd, buf, n);
        if (r >= 0)
            return r;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (await(fd, POLLIN, idle_s) < 0)
                return -1;
        } else if (errno != EINTR)
            return -1;
    }
}

// Writes n bytes of buf, cycling over it if n is larger; *done counts what went out.
static int write_all(int fd, const char *buf, size_t buf_len, uint64_t n, uint64_t *done,
                     int idle_s)
{
    *done = 0;
    while (*done < n) {
        size_t at = *done % buf_len, k = buf_len - at;
        if (k > n - *done)
            k = n - *done;
        ssize_t w = write(fd, buf + at, k);
        if (w >= 0)
            *done += w;
        else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (await(fd, POLLOUT, idle_s) < 0)
                return -1;
        } else if (errno != EINTR)
            return -1;
    }
    return 0;
}

/* Reads a line of at most MAX_LINE bytes into line and returns its length without the '\n'
 * (bytes after it are dropped); -1 with *bad saying why there is no line, -2 on a read error
 * (errno). */
static ssize_t read_line(int fd, char line[MAX_LINE], const char **bad, int idle_s)
{
    size_t len = 0;
    for (;;) {
        if (len == MAX_LINE) {
            *bad = "no newline within 32 bytes";
            return -1;
        }
        ssize_t r = read_some(fd, line + len, MAX_LINE - len, idle_s);
        if (r < 0)
            return -2;
        if (r == 0) {
            *bad = len ? "connection closed before a newline" : "connection closed without a line";
            return -1;
        }
        char *nl = memchr(line + len, '\n', r);
        if (nl)
            return nl - line;
        len += r;
    }
}

static void serve_sink(int fd, const char *peer)
{
    uint64_t n = 0;
    ssize_t r;
    while ((r = read_some(fd, inbuf, sizeof inbuf, SERVER_IDLE_S)) > 0)
        n += r;
    if (r < 0) {
        say("netbench: sink: failed with %s after %" PRIu64 " bytes: %s\n", peer, n,
            why(errno, "no data for 60 s"));
        return;
    }
    char reply[MAX_LINE];
    int len = snprintf(reply, sizeof reply, "%" PRIu64 "\n", n);
    uint64_t done;
    if (write_all(fd, reply, len, len, &done, SERVER_IDLE_S) < 0) {
        say("netbench: sink: received %" PRIu64 " bytes from %s but could not reply: %s\n", n,
            peer, why(errno, "no progress for 60 s"));
        return;
    }
    say("netbench: sink: received %" PRIu64 " bytes from %s\n", n, peer);
}

static void serve_source(int fd, const char *peer)
{
    char line[MAX_LINE], reason[80];
    const char *bad = NULL;
    uint64_t n = 0;
    ssize_t len = read_line(fd, line, &bad, SERVER_IDLE_S);
    if (len == -2)
        bad = why(errno, "no data for 60 s");
    else if (len == 0)
        bad = "empty request";
    else if (len > MAX_DIGITS)
        bad = "more than 20 digits";
    else if (len > 0) {
        switch (parse_dec(line, len, MAX_BYTES, &n)) {
        case -1:
            bad = "not a decimal number";
            break;
        case -2:
            snprintf(reason, sizeof reason, "%.*s bytes is above the 1 GiB limit", (int)len, line);
            bad = reason;
            break;
        }
    }
    if (bad) {
        say("netbench: source: refused request from %s: %s\n", peer, bad);
        return;
    }
    uint64_t sent;
    if (write_all(fd, zeros, sizeof zeros, n, &sent, SERVER_IDLE_S) < 0) {
        say("netbench: source: failed sending to %s after %" PRIu64 " of %" PRIu64 " bytes: %s\n",
            peer, sent, n, why(errno, "no progress for 60 s"));
        return;
    }
    say("netbench: source: sent %" PRIu64 " bytes to %s\n", n, peer);
}

struct listener {
    const char *name;
    int fd;
    void (*serve)(int fd, const char *peer);
};

static void *serve_forever(void *arg)
{
    struct listener *l = arg;
    for (;;) {
        struct sockaddr_in sa;
        socklen_t sa_len = sizeof sa;
        int fd = accept4(l->fd, (struct sockaddr *)&sa, &sa_len, SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            fprintf(stderr, "netbench: %s: accept: %s\n", l->name, strerror(errno));
            sleep(1); // out of descriptors or memory: wait rather than spin
            continue;
        }
        char peer[INET_ADDRSTRLEN] = "?";
        inet_ntop(AF_INET, &sa.sin_addr, peer, sizeof peer);
        l->serve(fd, peer);
        close(fd);
    }
    return NULL;
}

static int listen_on(const char *name, uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = {
        .sin_family = AF_INET,
        .sin_port = htons(port),
        .sin_addr.s_addr = htonl(INADDR_ANY),
    };
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 16) < 0)
        fail("serve: %s on port %u: %s", name, (unsigned)port, strerror(errno));
    return fd;
}

// UDP echo, for ever: what our guest serves on port 7, so that a Linux far end answers the
// same datagrams the same way.
static void *serve_echo(void *arg)
{
    int fd = *(int *)arg;
    char buf[65536];
    for (;;) {
        struct sockaddr_in sa;
        socklen_t sa_len = sizeof sa;
        ssize_t r = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&sa, &sa_len);
        if (r < 0) {
            if (errno != EINTR)
                fprintf(stderr, "netbench: echo: recvfrom: %s\n", strerror(errno));
            continue;
        }
        (void)sendto(fd, buf, r, 0, (struct sockaddr *)&sa, sa_len);
    }
    return NULL;
}

static int serve(uint16_t sink_port, uint16_t source_port, uint16_t echo_port)
{
    static struct listener sink = { "sink", -1, serve_sink };
    static struct listener source = { "source", -1, serve_source };
    sink.fd = listen_on("sink", sink_port);
    source.fd = listen_on("source", source_port);
    static int echo_fd;
    echo_fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in echo = {
        .sin_family = AF_INET,
        .sin_port = htons(echo_port),
        .sin_addr.s_addr = htonl(INADDR_ANY),
    };
    if (echo_fd < 0 || bind(echo_fd, (struct sockaddr *)&echo, sizeof echo) < 0)
        fail("serve: echo on UDP port %u: %s", (unsigned)echo_port, strerror(errno));
    fprintf(stderr, "netbench: listening: sink on port %u, source on port %u, echo on UDP port %u\n",
            (unsigned)sink_port, (unsigned)source_port, (unsigned)echo_port);
    pthread_t t;
    int err = pthread_create(&t, NULL, serve_forever, &sink);
    if (!err)
        err = pthread_create(&t, NULL, serve_echo, &echo_fd);
    if (err)
        fail("serve: starting a thread: %s", strerror(err));
    serve_forever(&source);
    return 0;
}

static int dial(const struct sockaddr_in *sa, const char *where)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        fail("socket: %s", strerror(errno));
    /* The FORCE options pass net.core.[rw]mem_max, which would cap the buffers below what a
     * fast path needs; they need CAP_NET_ADMIN, hence the fallback. Set before connect: the
     * receive buffer decides the window scale offered in the SYN. */
    int size = CLIENT_BUF;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) < 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        fail("fcntl: %s", strerror(errno));
    // Non-blocking for good: an unanswered SYN costs CONNECT_S, not the kernel's two minutes,
    // and the transfer's timeouts are await()'s.
    if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) < 0) {
        if (errno != EINPROGRESS)
            fail("connect to %s: %s", where, strerror(errno));
        if (await(fd, POLLOUT, CONNECT_S) < 0)
            fail("connect to %s: %s", where, why(errno, "no answer within 10 s"));
        int err = 0;
        socklen_t err_len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len) < 0)
            err = errno;
        if (err)
            fail("connect to %s: %s", where, strerror(err));
    }
    return fd;
}

static int run_send(int fd, uint64_t bytes)
{
    uint64_t sent;
    double t0 = now();
    if (write_all(fd, zeros, sizeof zeros, bytes, &sent, CLIENT_IDLE_S) < 0)
        fail("send: after %" PRIu64 " of %" PRIu64 " bytes: %s", sent, bytes,
             why(errno, "stalled: no progress for 30 s"));
    if (shutdown(fd, SHUT_WR) < 0)
        fail("send: shutdown: %s", strerror(errno));
    char line[MAX_LINE], count[MAX_LINE] = "none";
    const char *bad = NULL;
    uint64_t got = 0;
    ssize_t len = read_line(fd, line, &bad, CLIENT_IDLE_S);
    double t1 = now();
    if (len == -2)
        fail("send: waiting for the far end's count: %s", why(errno, "no reply for 30 s"));
    if (len >= 0 && parse_dec(line, len, UINT64_MAX, &got) < 0)
        bad = "the far end's reply is not a decimal count";
    if (!bad)
        snprintf(count, sizeof count, "%" PRIu64, got);
    printf("sent=%" PRIu64 " far_end_received=%s seconds=%.6f mib_s=%.2f\n", bytes, count,
           t1 - t0, mib_s(bytes, t1 - t0));
    if (bad) {
        fprintf(stderr, "netbench: send: no valid count from the far end: %s\n", bad);
        return 1;
    }
    if (got != bytes) {
        fprintf(stderr, "netbench: send: the far end counted %" PRIu64 " of %" PRIu64 " bytes\n",
                got, bytes);
        return 1;
    }
    return 0;
}

static int run_recv(int fd, uint64_t bytes)
{
    char req[MAX_LINE];
    int len = snprintf(req, sizeof req, "%" PRIu64 "\n", bytes);
    uint64_t done, got = 0;
    if (write_all(fd, req, len, len, &done, CLIENT_IDLE_S) < 0)
        fail("recv: sending the request: %s", why(errno, "no progress for 30 s"));
    double t0 = 0, t1 = 0;
    uint64_t first = 0; // arrived at t0: not part of the interval's rate
    for (;;) {
        ssize_t r = read_some(fd, inbuf, sizeof inbuf, CLIENT_IDLE_S);
        if (r < 0)
            fail("recv: after %" PRIu64 " of %" PRIu64 " bytes: %s", got, bytes,
                 why(errno, "stalled: no data for 30 s"));
        if (r == 0)
            break;
        t1 = now();
        if (got == 0) {
            t0 = t1;
            first = r;
        }
        got += r;
        if (got > bytes) // a far end that never stops would keep us here for ever
            break;
    }
    printf("requested=%" PRIu64 " received=%" PRIu64 " seconds=%.6f mib_s=%.2f\n", bytes, got,
           t1 - t0, mib_s(got - first, t1 - t0));
    if (got > bytes) {
        fprintf(stderr, "netbench: recv: the far end sent more than the %" PRIu64 " bytes asked\n",
                bytes);
        return 1;
    }
    if (got < bytes) {
        fprintf(stderr, "netbench: recv: the far end closed after %" PRIu64 " of %" PRIu64
                " bytes\n", got, bytes);
        return 1;
    }
    return 0;
}

/* COUNT datagrams through the far end's echo, UDP_WINDOW in flight. A datagram carries its
 * sequence number in its first 8 bytes; only the echo of one in the current window counts,
 * once. */
static int run_udp(const struct sockaddr_in *sa, const char *where, uint64_t count)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, (const struct sockaddr *)sa, sizeof *sa) < 0)
        fail("udp: %s: %s", where, strerror(errno));
    char out[UDP_SIZE] = { 0 }, in[2048];
    uint64_t sent = 0, echoed = 0, lost = 0, next = 0; // next: the first number in flight
    char done[UDP_WINDOW] = { 0 }; // echoed, by number modulo the window
    double t0 = now(), t1 = t0, last_echo = t0;
    while (echoed + lost < count) {
        // Keep the window full: numbers next .. next + UDP_WINDOW - 1.
        while (sent < count && sent < next + UDP_WINDOW) {
            memcpy(out, &sent, sizeof sent);
            if (send(fd, out, sizeof out, 0) < 0 && errno != ECONNREFUSED && errno != ENOBUFS)
                fail("udp: send to %s: %s", where, strerror(errno));
            done[sent % UDP_WINDOW] = 0;
            sent++;
        }
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r = poll(&p, 1, UDP_LOST_MS);
        if (r < 0 && errno != EINTR)
            fail("udp: poll: %s", strerror(errno));
        if (r == 0) {
            if (now() - last_echo > UDP_IDLE_S)
                fail("udp: %s: no echo for %d s after %" PRIu64 " of %" PRIu64, where,
                     UDP_IDLE_S, echoed, count);
            // The window's unanswered datagrams are lost; the next ones go out afresh.
            for (uint64_t n = next; n < sent; n++)
                lost += !done[n % UDP_WINDOW];
            next = sent;
            continue;
        }
        ssize_t got = recv(fd, in, sizeof in, MSG_DONTWAIT);
        if (got < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNREFUSED)
                continue;
            fail("udp: recv from %s: %s", where, strerror(errno));
        }
        uint64_t n;
        if (got != UDP_SIZE)
            continue;
        memcpy(&n, in, sizeof n);
        if (n < next || n >= sent || done[n % UDP_WINDOW])
            continue;
        done[n % UDP_WINDOW] = 1;
        echoed++;
        t1 = last_echo = now();
        // Slide past the answered front of the window.
        while (next < sent && done[next % UDP_WINDOW])
            next++;
    }
    printf("sent=%" PRIu64 " echoed=%" PRIu64 " lost=%" PRIu64 " seconds=%.6f pps=%.0f\n", sent,
           echoed, lost, t1 - t0, t1 > t0 ? echoed / (t1 - t0) : 0.0);
    if (lost) {
        fprintf(stderr, "netbench: udp: %" PRIu64 " of %" PRIu64 " datagrams lost\n", lost, count);
        return 1;
    }
    return 0;
}

static uint16_t parse_port(const char *s)
{
    uint64_t v;
    if (parse_dec(s, strlen(s), 65535, &v) < 0 || v == 0)
        usage();
    return v;
}

int main(int argc, char **argv)
{
    // A peer that goes away must be an EPIPE we report, not a silent death.
    signal(SIGPIPE, SIG_IGN);
    if (argc == 2 && strcmp(argv[1], "serve") == 0)
        return serve(5001, 5002, ECHO_PORT);
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "serve") == 0)
        return serve(parse_port(argv[2]), parse_port(argv[3]),
                     argc == 5 ? parse_port(argv[4]) : ECHO_PORT);
    int udp = argc == 5 && strcmp(argv[1], "udp") == 0;
    if (argc != 5 || (strcmp(argv[1], "send") != 0 && strcmp(argv[1], "recv") != 0 && !udp))
        usage();
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(parse_port(argv[3])) };
    uint64_t bytes;
    if (inet_pton(AF_INET, argv[2], &sa.sin_addr) != 1 ||
        parse_dec(argv[4], strlen(argv[4]), udp ? UDP_MAX_COUNT : MAX_BYTES, &bytes) < 0 ||
        bytes == 0)
        usage();
    char where[INET_ADDRSTRLEN + 8];
    snprintf(where, sizeof where, "%s:%s", argv[2], argv[3]);
    if (udp)
        return run_udp(&sa, where, bytes);
    int fd = dial(&sa, where);
    return argv[1][0] == 's' ? run_send(fd, bytes) : run_recv(fd, bytes);
}
