/* flood GATE SOCK N TAG: the log benchmark's child.
 *
 * Sends "<CLOCK_MONOTONIC seconds> <pid>\n" in one datagram to the AF_UNIX
 * SOCK_DGRAM socket SOCK (as stamp.c does: "I am here"), then opens the FIFO GATE
 * for reading, which blocks until the harness opens it for writing, so every
 * instance starts flooding at the same moment. Then it writes N lines of exactly
 * 100 bytes to stdout, one write(2) per line:
 *
 *     I<TAG, 3 digits> L<line number, 10 digits> xxxx...x\n
 *
 * and pause()s forever (default signal actions, so SIGTERM ends it), so no tool
 * sees an exit to react to while the harness counts lines.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LINE 100

int main(int argc, char **argv) {
    if (argc != 5 || strlen(argv[2]) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        fprintf(stderr, "usage: flood GATE SOCK N TAG\n");
        return 2;
    }
    long long n = atoll(argv[3]);
    int tag = atoi(argv[4]);

    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char msg[64];
    int len = snprintf(msg, sizeof msg, "%lld.%09ld %d\n", (long long)ts.tv_sec, ts.tv_nsec,
                       (int)getpid());
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, argv[2]);
    int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock >= 0) {
        if (sendto(sock, msg, (size_t)len, 0, (struct sockaddr *)&addr, sizeof addr) < 0)
            perror("flood: sendto");
        close(sock);
    }

    int gate = open(argv[1], O_RDONLY | O_CLOEXEC);  /* blocks until the harness opens it */
    if (gate < 0) {
        perror("flood: open gate");
        return 1;
    }
    close(gate);

    char line[LINE];
    memset(line, 'x', sizeof line);
    line[LINE - 1] = '\n';
    for (long long i = 0; i < n; i++) {
        char head[24];
        int h = snprintf(head, sizeof head, "I%03d L%010lld ", tag % 1000, i);
        memcpy(line, head, (size_t)h);
        ssize_t w;
        do
            w = write(1, line, LINE);  /* <= PIPE_BUF: all or nothing */
        while (w < 0 && errno == EINTR);
        if (w != LINE) {
            perror("flood: write");
            return 1;
        }
    }
    for (;;)
        pause();
}
