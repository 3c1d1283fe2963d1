/* Floods a guest with events, from dom0 (rig @fault=evtchn-flood):
 *
 *     evtchn-flood DOMID SECONDS [PORT]
 *
 * binds the guest's PORT (one it allocated unbound for dom0 and published, as a frontend does
 * for its backend) or, without PORT, a port it allocates in the guest's own table (as a
 * toolstack does for a new domain's xenstore and console channels: the guest never asked for
 * it), and notifies it as fast as it can for SECONDS, then closes its end.
 * Prints "port=<guest port> notifications=<n> seconds=<s>". */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <xenctrl.h>
#include <xenevtchn.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: evtchn-flood DOMID SECONDS [PORT]\n");
        return 2;
    }
    uint32_t domid = strtoul(argv[1], NULL, 10);
    double seconds = atof(argv[2]);
    xc_interface *xch = xc_interface_open(NULL, NULL, 0);
    xenevtchn_handle *xce = xenevtchn_open(NULL, 0);
    if (!xch || !xce) {
        perror("evtchn-flood: open");
        return 1;
    }
    int remote = argc == 4 ? atoi(argv[3]) : xc_evtchn_alloc_unbound(xch, domid, 0);
    if (remote < 0) {
        perror("evtchn-flood: alloc_unbound in the guest");
        return 1;
    }
    xenevtchn_port_or_error_t local = xenevtchn_bind_interdomain(xce, domid, remote);
    if (local < 0) {
        perror("evtchn-flood: bind_interdomain");
        return 1;
    }
    unsigned long n = 0;
    double start = now(), t = start;
    while (t - start < seconds) {
        for (int i = 0; i < 256; i++, n++) {
            if (xenevtchn_notify(xce, local) < 0) {
                perror("evtchn-flood: notify");
                return 1;
            }
        }
        t = now();
    }
    printf("port=%d notifications=%lu seconds=%.2f\n", remote, n, t - start);
    fflush(stdout);
    xenevtchn_unbind(xce, local);
    xenevtchn_close(xce);
    xc_interface_close(xch);
    return 0;
}
