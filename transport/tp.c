/* tp.c - transport URLs (see tp.h). Portable: the device set links it;
 * the host clock, tp_now_ms, is in host/tp_clock.c. */
#include "tp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int url_err(char *err, size_t errlen, const char *url, const char *why)
{
    if (err && errlen)
        snprintf(err, errlen, "bad URL \"%s\": %s", url, why);
    return -EINVAL;
}

static int parse_port(const char *s, uint16_t *port)
{
    if (!*s)
        return -1;
    unsigned long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (unsigned long)(*p - '0');
        if (v > 65535)
            return -1;
    }
    *port = (uint16_t)v;
    return 0;
}

int tp_url_parse(const char *url, tp_url_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!url)
        return url_err(err, errlen, "", "empty");

    if (strncmp(url, "uart:", 5) == 0) {
        const char *p = url + 5;
        if (strncmp(p, "//", 2) == 0)
            p += 2;
        const char *q = strchr(p, '?');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        if (n == 0 || n >= sizeof(out->path) || p[0] != '/')
            return url_err(err, errlen, url, "expected uart:/dev/ttyX");
        strcpy(out->scheme, "uart");
        memcpy(out->path, p, n);
        out->baud = 115200;
        /* issue 12: options baud, rtscts, frame, window joined by '&' */
        while (q && *q) {
            q++;
            const char *v = strchr(q, '=');
            const char *amp = strchr(q, '&');
            if (!v || (amp && amp < v))
                return url_err(err, errlen, url,
                               "options are baud=N, rtscts=0|1, frame=N, "
                               "window=N");
            char *end;
            unsigned long ov = strtoul(v + 1, &end, 10);
            if (end == v + 1 || (*end && *end != '&'))
                return url_err(err, errlen, url, "bad option value");
            size_t kl = (size_t)(v - q);
            if (kl == 4 && strncmp(q, "baud", 4) == 0) {
                if (ov == 0 || ov > 100000000ul)
                    return url_err(err, errlen, url, "bad baud rate");
                out->baud = (uint32_t)ov;
            } else if (kl == 6 && strncmp(q, "rtscts", 6) == 0 && ov <= 1) {
                out->rtscts = (uint8_t)ov;
            } else if (kl == 5 && strncmp(q, "frame", 5) == 0 &&
                       ov >= 64 && ov <= 4096) {
                out->frame = (uint16_t)ov;
            } else if (kl == 6 && strncmp(q, "window", 6) == 0 && ov >= 1 &&
                       ov <= 8) {
                out->window = (uint8_t)ov;
            } else {
                return url_err(err, errlen, url,
                               "options are baud=N, rtscts=0|1, "
                               "frame=64..4096, window=1..8");
            }
            q = *end ? end : NULL;
        }
        return 0;
    }

    const char *rest;
    if (strncmp(url, "tcp://", 6) == 0) {
        strcpy(out->scheme, "tcp");
        out->port = TP_TCP_DEFAULT_PORT;
        rest = url + 6;
    } else if (strncmp(url, "tls://", 6) == 0) {
        strcpy(out->scheme, "tls");
        out->port = TP_TLS_DEFAULT_PORT;
        rest = url + 6;
    } else if (!strstr(url, "://")) {
        strcpy(out->scheme, "tcp"); /* HOST[:PORT] */
        out->port = TP_TCP_DEFAULT_PORT;
        rest = url;
    } else {
        return url_err(err, errlen, url,
                       "expected tcp://HOST:PORT, tls://HOST:PORT or "
                       "uart:/dev/ttyX");
    }

    size_t rl = strlen(rest);
    if (rl && rest[rl - 1] == '/') /* tolerate a trailing slash */
        rl--;
    const char *host = rest, *port = NULL;
    size_t hl;
    if (rest[0] == '[') {
        const char *close = memchr(rest, ']', rl);
        if (!close)
            return url_err(err, errlen, url, "missing ']' after IPv6 address");
        host = rest + 1;
        hl = (size_t)(close - host);
        const char *after = close + 1;
        if (after < rest + rl) {
            if (*after != ':')
                return url_err(err, errlen, url, "expected ':' after ']'");
            port = after + 1;
        }
    } else {
        const char *colon = memchr(rest, ':', rl);
        if (colon && memchr(colon + 1, ':', (size_t)(rest + rl - colon - 1)))
            return url_err(err, errlen, url,
                           "IPv6 addresses go in brackets: tcp://[::1]:7070");
        hl = colon ? (size_t)(colon - rest) : rl;
        if (colon)
            port = colon + 1;
    }
    if (hl == 0)
        return url_err(err, errlen, url, "missing host");
    if (hl >= sizeof(out->host))
        return url_err(err, errlen, url, "host name too long");
    memcpy(out->host, host, hl);
    out->host[hl] = 0;
    if (strpbrk(out->host, "/?#@ "))
        return url_err(err, errlen, url, "bad character in host");
    if (port) {
        char pb[8];
        size_t pl = (size_t)(rest + rl - port);
        if (pl == 0 || pl >= sizeof(pb))
            return url_err(err, errlen, url, "bad port");
        memcpy(pb, port, pl);
        pb[pl] = 0;
        if (parse_port(pb, &out->port))
            return url_err(err, errlen, url, "bad port (0..65535)");
    }
    return 0;
}

int tp_url_connectable(const tp_url_t *url, char *err, size_t errlen)
{
    if (strcmp(url->scheme, "uart") != 0 && url->port == 0) {
        if (err && errlen)
            snprintf(err, errlen, "port 0 is for listening; give the "
                                  "device's port");
        return -EINVAL;
    }
    return 0;
}

char *tp_format_hostport(const char *host, uint16_t port, char *out,
                         size_t cap)
{
    if (strchr(host, ':'))
        snprintf(out, cap, "[%s]:%u", host, (unsigned)port);
    else
        snprintf(out, cap, "%s:%u", host, (unsigned)port);
    return out;
}
