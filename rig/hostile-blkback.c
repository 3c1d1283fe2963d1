/* A hostile blkback, from dom0 (rig @fault=hostile-backend):
 *
 *     hostile-blkback DOMID RING_REF PORT STATE_PATH SECONDS
 *
 * serves the one-page blkif ring the guest published (RING_REF, event channel PORT) with
 * answers that are all correct: reads get zeros, writes are taken, every response has the
 * request's id, operation and BLKIF_RSP_OKAY. But it maps every data page's grant and never
 * unmaps one, so the guest can end none of them; between requests it notifies the guest's
 * port as fast as it can and rewrites its own state node (STATE_PATH, "4": Connected, so
 * every write fires the guest's watch on it). It runs SECONDS, then prints
 * "requests=<n> held=<n> notifications=<n> state_writes=<n> seconds=<s>" and exits,
 * leaving its mappings to die with it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <xenevtchn.h>
#include <xengnttab.h>
#include <xenstore.h>
/* The barriers io/ring.h expects of its includer (x86: loads and stores are not reordered
 * with their own kind, only a full barrier needs an instruction). */
#define mb() __asm__ __volatile__("mfence" ::: "memory")
#define rmb() __asm__ __volatile__("" ::: "memory")
#define wmb() __asm__ __volatile__("" ::: "memory")
#include <xen/io/blkif.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Maps every segment of `req` (writable for a read: we write the data into it) and keeps
 * the mappings; fills a read's sectors with zeros. Returns the response status. */
static int16_t serve(xengnttab_handle *xgt, uint32_t domid, const blkif_request_t *req,
                     unsigned long *held)
{
    int read = req->operation == BLKIF_OP_READ;
    if (!read && req->operation != BLKIF_OP_WRITE)
        return BLKIF_RSP_EOPNOTSUPP;
    if (req->nr_segments == 0 || req->nr_segments > BLKIF_MAX_SEGMENTS_PER_REQUEST)
        return BLKIF_RSP_ERROR;
    for (int i = 0; i < req->nr_segments; i++) {
        const struct blkif_request_segment *seg = &req->seg[i];
        if (seg->first_sect > seg->last_sect || seg->last_sect > 7)
            return BLKIF_RSP_ERROR;
        int prot = read ? PROT_READ | PROT_WRITE : PROT_READ;
        uint8_t *page = xengnttab_map_grant_ref(xgt, domid, seg->gref, prot);
        if (!page)
            return BLKIF_RSP_ERROR;
        /* Never unmapped: the grant stays in use for as long as this process lives. */
        (*held)++;
        if (read)
            memset(page + seg->first_sect * 512, 0, (seg->last_sect - seg->first_sect + 1) * 512);
    }
    return BLKIF_RSP_OKAY;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: hostile-blkback DOMID RING_REF PORT STATE_PATH SECONDS\n");
        return 2;
    }
    uint32_t domid = strtoul(argv[1], NULL, 10);
    uint32_t ring_ref = strtoul(argv[2], NULL, 10);
    uint32_t remote = strtoul(argv[3], NULL, 10);
    const char *state = argv[4];
    double seconds = atof(argv[5]);

    xengnttab_handle *xgt = xengnttab_open(NULL, 0);
    xenevtchn_handle *xce = xenevtchn_open(NULL, 0);
    struct xs_handle *xs = xs_open(0);
    if (!xgt || !xce || !xs) {
        perror("hostile-blkback: open");
        return 1;
    }
    /* Every data page mapped and kept: far more than the few the guest tolerates. */
    xengnttab_set_max_grants(xgt, 65536);
    blkif_sring_t *sring = xengnttab_map_grant_ref(xgt, domid, ring_ref, PROT_READ | PROT_WRITE);
    if (!sring) {
        perror("hostile-blkback: map the ring");
        return 1;
    }
    xenevtchn_port_or_error_t local = xenevtchn_bind_interdomain(xce, domid, remote);
    if (local < 0) {
        perror("hostile-blkback: bind_interdomain");
        return 1;
    }
    blkif_back_ring_t ring;
    BACK_RING_INIT(&ring, sring, 4096);

    unsigned long requests = 0, held = 0, notifications = 0, state_writes = 0;
    double start = now(), t = start;
    while (t - start < seconds) {
        RING_IDX rp = ring.sring->req_prod;
        xen_rmb();
        int answered = 0;
        while (ring.req_cons != rp && !RING_REQUEST_CONS_OVERFLOW(&ring, ring.req_cons)) {
            blkif_request_t req;
            RING_COPY_REQUEST(&ring, ring.req_cons, &req);
            ring.req_cons++;
            blkif_response_t *rsp = RING_GET_RESPONSE(&ring, ring.rsp_prod_pvt);
            rsp->id = req.id;
            rsp->operation = req.operation;
            rsp->status = serve(xgt, domid, &req, &held);
            ring.rsp_prod_pvt++;
            requests++;
            answered = 1;
        }
        int notify = 0;
        if (answered)
            RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&ring, notify);
        if (notify && xenevtchn_notify(xce, local) == 0)
            notifications++;
        /* The flood: the port, whether or not there was anything to say, and the state. */
        for (int i = 0; i < 64; i++, notifications++)
            xenevtchn_notify(xce, local);
        if (xs_write(xs, XBT_NULL, state, "4", 1))
            state_writes++;
        t = now();
    }
    printf("requests=%lu held=%lu notifications=%lu state_writes=%lu seconds=%.2f\n", requests,
           held, notifications, state_writes, t - start);
    fflush(stdout);
    xenevtchn_unbind(xce, local);
    return 0;
}
