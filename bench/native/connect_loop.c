/* The ceiling: how many TCP connects per second this machine completes on loopback.
 *
 * One connection at a time, the way a prober sees it: non-blocking connect(), poll() until the
 * kernel reports the outcome, read SO_ERROR, close(). Destinations rotate over 127.2.0.1-250 so the
 * ephemeral ports of one destination never run out.
 * Usage: connect_loop PORT SECONDS   -> prints "<connects> <failures> <elapsed seconds>"
 *
 * The scrape's C counterpart (the same connects a scrape of N targets makes, as many in flight):
 *        connect_loop many N INFLIGHT OPEN_PORT CLOSED_PORT
 * target i is 127.(1 + i/62500).(i/250 % 250 + 1).(i % 250 + 1) on CLOSED_PORT when i % 5 == 4, else
 * OPEN_PORT (bench/run.py's target_address); an epoll loop keeps INFLIGHT non-blocking connects
 * running, reads SO_ERROR and closes each as its outcome arrives.
 *        -> prints "<open> <refused> <other> <elapsed seconds>"
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
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

static int start(int epfd, long i, int open_port, int closed_port) {
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons(i % 5 == 4 ? closed_port : open_port),
                               .sin_addr.s_addr = htonl((127u << 24) | ((1 + i / 62500) << 16) |
                                                        ((i / 250 % 250 + 1) << 8) | (i % 250 + 1))};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        perror("socket");
        exit(1);
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 && errno != EINPROGRESS) {
        int code = errno;
        close(fd);
        return code;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.fd = fd};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    return -1;
}

static int many(long n, int inflight, int open_port, int closed_port) {
    long next = 0, done = 0, opened = 0, refused = 0, other = 0;
    int epfd = epoll_create1(0);
    struct epoll_event events[256];
    double begin = now();
    while (done < n) {
        while (next < n && next - done < inflight) {
            int code = start(epfd, next++, open_port, closed_port);
            if (code >= 0) { /* finished at once */
                done++;
                if (code == ECONNREFUSED) refused++; else other++;
            }
        }
        int ready = epoll_wait(epfd, events, 256, 5000);
        if (ready <= 0) {
            fprintf(stderr, "no outcome within 5 s\n");
            return 1;
        }
        for (int k = 0; k < ready; k++) {
            int fd = events[k].data.fd, code = 0;
            socklen_t len = sizeof code;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &len);
            close(fd); /* also removes it from the epoll set */
            done++;
            if (code == 0) opened++; else if (code == ECONNREFUSED) refused++; else other++;
        }
    }
    printf("%ld %ld %ld %.6f\n", opened, refused, other, now() - begin);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 6 && strcmp(argv[1], "many") == 0)
        return many(atol(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
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
