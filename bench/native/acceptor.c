/* Loopback target for the benchmark: listen on 0.0.0.0:PORT, accept and close in a tight loop.
 *
 * A listener whose accept queue fills makes the kernel drop new SYNs, which the exporter would
 * (correctly) report as timeouts; draining the queue here keeps "open" targets open at any rate.
 * Bound to 0.0.0.0 it answers for every 127.x.y.z, so one process serves thousands of targets.
 * Usage: acceptor PORT MAX_SECONDS   (exits by itself after MAX_SECONDS; prints "ready" once listening)
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT MAX_SECONDS\n", argv[0]);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1])),
                               .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 65535) != 0) {
        perror("acceptor: bind/listen");
        return 1;
    }
    alarm(atoi(argv[2]));  /* a hard bound on the loop below, even if the benchmark dies */
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        int conn = accept(fd, NULL, NULL);
        if (conn >= 0)
            close(conn);
        else if (errno != EINTR && errno != ECONNABORTED && errno != EMFILE && errno != ENFILE)
            return 1;
    }
}
