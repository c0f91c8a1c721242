/* The ceiling: how many TCP connects per second this machine completes on loopback.
 *
 * One connection at a time, the way a prober sees it: non-blocking connect(), poll() until the
 * kernel reports the outcome, read SO_ERROR, close(). Destinations rotate over 127.2.0.1-250 so the
 * ephemeral ports of one destination never run out.
 * Usage: connect_loop PORT SECONDS   -> prints "<connects> <failures> <elapsed seconds>"
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT SECONDS\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    double seconds = atof(argv[2]);
    long connects = 0, failures = 0;
    double start = now(), elapsed = 0;
    while (elapsed < seconds) {
        struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port),
                                   .sin_addr.s_addr = htonl(0x7f020001 + (connects % 250))};
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            perror("socket");
            return 1;
        }
        int code = 0;
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
            code = errno;
            if (code == EINPROGRESS) {
                struct pollfd p = {.fd = fd, .events = POLLOUT};
                socklen_t len = sizeof code;
                code = poll(&p, 1, 5000) == 1 ? 0 : ETIMEDOUT;
                if (code == 0)
                    getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &len);
            }
        }
        close(fd);
        if (code == 0)
            connects++;
        else
            failures++;
        if (((connects + failures) & 255) == 0)
            elapsed = now() - start;
    }
    printf("%ld %ld %.6f\n", connects, failures, now() - start);
    return 0;
}
