/* pipe_reader MODE ARG [N]: what a reader's way of reading costs the WRITER.
 *
 * Forks a writer that writes N (default 2,000,000) lines of 100 bytes into a 1 MiB
 * pipe, one write(2) per line, as bench/flood.c does, and reads them in one of these
 * ways, discarding them:
 *
 *   poll BURN_US  poll(2), then read(2) up to 128 KiB, then BURN_US microseconds of
 *                 CPU: a daemon that reads on every readiness, with a Python loop
 *                 turn's cost (supervisord)
 *   timer US      every US microseconds, read everything (herdsman's flood reads)
 *   tee US        every US microseconds, herdsman's held read: tee into a private
 *                 pipe, tee that into a second, read it, splice the service pipe's
 *                 bytes and then the held copy to /dev/null
 *
 * POLLED=once polls the pipe once before the writer starts; POLLED=kept keeps it in
 * an epoll (never waited on) throughout. Without POLLED nothing ever polls it.
 *
 * Prints the writer's CPU seconds per MB (user, system) and the reader's. Once a pipe
 * has been polled, the kernel wakes its wait queue on every write for as long as it
 * lives (pipe->poll_usage), whoever reads it and however. See bench/README.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LINE 100
#define CAP (1024 * 1024)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double secs(struct timeval t) { return t.tv_sec + t.tv_usec / 1e6; }

static void writer(int fd, long long n) {
    char line[LINE];
    memset(line, 'x', sizeof line);
    line[LINE - 1] = '\n';
    for (long long i = 0; i < n; i++) {
        char head[24];
        int h = snprintf(head, sizeof head, "I000 L%010lld ", i);
        memcpy(line, head, (size_t)h);
        ssize_t w;
        do
            w = write(fd, line, LINE);
        while (w < 0 && errno == EINTR);
        if (w != LINE)
            _exit(1);
    }
    _exit(0);
}

static void drain_to(int from, int to, ssize_t size) {
    while (size > 0) {
        ssize_t moved = splice(from, NULL, to, NULL, (size_t)size, 0);
        if (moved <= 0)
            exit(1);
        size -= moved;
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: pipe_reader poll|timer|tee ARG [N]\n");
        return 2;
    }
    const char *mode = argv[1];
    long arg = atol(argv[2]);
    long long n = argc > 3 ? atoll(argv[3]) : 2000000;
    const char *polled = getenv("POLLED");
    int p[2], gate[2], held[2], copy[2];
    if (pipe2(p, O_CLOEXEC) || pipe(gate) || pipe2(held, O_NONBLOCK) || pipe2(copy, O_NONBLOCK))
        return 1;
    fcntl(p[1], F_SETPIPE_SZ, CAP);
    fcntl(held[1], F_SETPIPE_SZ, CAP);
    fcntl(copy[1], F_SETPIPE_SZ, CAP);
    pid_t child = fork();
    if (child == 0) {
        char go;
        close(gate[1]);
        if (read(gate[0], &go, 1) != 1)
            _exit(1);
        writer(p[1], n);
    }
    close(p[1]);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    int null = open("/dev/null", O_WRONLY);
    char *buf = malloc(CAP);
    memset(buf, 0, CAP);
    if (polled && !strcmp(polled, "once")) {
        struct pollfd pf = {p[0], POLLIN, 0};
        poll(&pf, 1, 0);
    }
    if (polled && !strcmp(polled, "kept")) {
        struct epoll_event ev = {.events = EPOLLIN};
        epoll_ctl(epoll_create1(0), EPOLL_CTL_ADD, p[0], &ev);
    }
    struct rusage r0, r1, rw;
    getrusage(RUSAGE_SELF, &r0);
    double t0 = now();
    if (write(gate[1], "g", 1) != 1)
        return 1;
    long long total = 0, reads = 0, want = n * LINE;
    while (total < want) {
        ssize_t got;
        if (!strcmp(mode, "poll")) {
            struct pollfd pf = {p[0], POLLIN, 0};
            poll(&pf, 1, -1);
            got = read(p[0], buf, 128 * 1024);
            for (double end = now() + arg / 1e6; now() < end;)
                ;
        } else {
            struct timespec pause = {0, arg * 1000};
            nanosleep(&pause, NULL);
            if (!strcmp(mode, "timer")) {
                got = read(p[0], buf, CAP);
            } else if (!strcmp(mode, "tee")) {
                got = tee(p[0], held[1], CAP, SPLICE_F_NONBLOCK);
                if (got > 0) {
                    tee(held[0], copy[1], (size_t)got, SPLICE_F_NONBLOCK);
                    for (ssize_t in = 0; in < got;)
                        in += read(copy[0], buf + in, (size_t)(got - in));
                    drain_to(p[0], null, got);
                    drain_to(held[0], null, got);
                }
            } else {
                fprintf(stderr, "pipe_reader: unknown mode %s\n", mode);
                return 2;
            }
        }
        if (got < 0 && errno == EAGAIN)
            continue;
        if (got <= 0)
            break;
        total += got;
        reads++;
    }
    double wall = now() - t0;
    getrusage(RUSAGE_SELF, &r1);
    int status;
    wait4(child, &status, 0, &rw);
    double mb = want / 1e6;
    printf("%s %ld polled=%s: %.3f M lines/s; writer %.4f s/MB (user %.3f s, system %.3f s); "
           "reader %.4f s/MB, %lld reads of %lld bytes\n",
           mode, arg, polled ? polled : "never", n / wall / 1e6,
           (secs(rw.ru_utime) + secs(rw.ru_stime)) / mb, secs(rw.ru_utime), secs(rw.ru_stime),
           (secs(r1.ru_utime) - secs(r0.ru_utime) + secs(r1.ru_stime) - secs(r0.ru_stime)) / mb,
           reads, reads ? total / reads : 0);
    return total == want ? 0 : 1;
}
