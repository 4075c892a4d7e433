/* stamp SOCKPATH: the benchmark's child process.
 *
 * At start it reads CLOCK_MONOTONIC, sends "<seconds.nanoseconds> <pid>\n" in one
 * datagram to the AF_UNIX SOCK_DGRAM socket SOCKPATH, then pause()s forever. It
 * keeps the default action for every signal, so SIGTERM and SIGKILL end it.
 * If the datagram cannot be sent (harness gone) it still pauses: the harness
 * then simply never hears of it.
 */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (argc != 2 || strlen(argv[1]) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        fprintf(stderr, "usage: stamp SOCKPATH (shorter than 108 bytes)\n");
        return 2;
    }
    char msg[64];
    int len = snprintf(msg, sizeof msg, "%lld.%09ld %d\n", (long long)ts.tv_sec, ts.tv_nsec,
                       (int)getpid());
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, argv[1]);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        if (sendto(fd, msg, (size_t)len, 0, (struct sockaddr *)&addr, sizeof addr) < 0)
            perror("stamp: sendto");
        close(fd);
    }
    for (;;)
        pause();
}
