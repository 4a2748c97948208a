/* Fast contract publisher for benchmarks: N telemetry messages at QoS 1 through libmosquitto.
 *
 * usage: publisher HOST PORT PREFIX COUNT DEVICES [RATE_PER_S]
 * RATE_PER_S = 0 publishes as fast as the broker acknowledges. Each payload's timestamp is the wall-clock
 * time of publishing (microseconds), so the latency benchmark can measure publish -> visible in DuckDB.
 * Prints "published=N acked=N seconds=S" on stdout when every PUBACK has arrived.
 */
#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile long acked = 0;

static void on_publish(struct mosquitto *m, void *obj, int mid) { (void)m; (void)obj; (void)mid; __sync_fetch_and_add(&acked, 1); }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s HOST PORT PREFIX COUNT DEVICES [RATE_PER_S]\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    const char *prefix = argv[3];
    long count = atol(argv[4]);
    int devices = atoi(argv[5]);
    double rate = argc > 6 ? atof(argv[6]) : 0.0;
    mosquitto_lib_init();
    struct mosquitto *m = mosquitto_new(NULL, true, NULL);
    mosquitto_max_inflight_messages_set(m, 1000);
    mosquitto_publish_callback_set(m, on_publish);
    if (mosquitto_connect(m, host, port, 60) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "cannot connect to %s:%d\n", host, port);
        return 1;
    }
    mosquitto_loop_start(m);
    char topic[256], payload[512], stamp[64];
    double start = now_s();
    for (long i = 0; i < count; i++) {
        if (rate > 0) {
            double due = start + i / rate;
            double wait = due - now_s();
            if (wait > 0) usleep((useconds_t)(wait * 1e6));
        }
        int dev = (int)(i % devices);
        struct timeval tv;
        gettimeofday(&tv, NULL);
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        /* A unique timestamp per (device, message): in bursts the microseconds carry the per-device sequence
         * (unique up to a million messages per device). */
        long seq = i / devices;
        strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(topic, sizeof topic, "%s/bench-%03d/telemetry", prefix, dev);
        snprintf(payload, sizeof payload,
                 "{\"temperature\": %.2f, \"timestamp\": \"%s.%06ldZ\", \"humidity\": 44.9, \"target_temp\": 21, "
                 "\"device_id\": \"bench-%03d\", \"heating\": \"%s\"}",
                 15.0 + (i % 100) / 10.0, stamp, rate > 0 ? (long)tv.tv_usec : (long)(seq % 1000000), dev,
                 (i % 2) ? "ON" : "OFF");
        int rc;
        while ((rc = mosquitto_publish(m, NULL, topic, (int)strlen(payload), payload, 1, false)) == MOSQ_ERR_OVERSIZE_PACKET ||
               rc == MOSQ_ERR_NOMEM) {
            usleep(100);
        }
        /* stay within a bounded window of unacknowledged messages */
        while (i + 1 - acked > 5000) usleep(50);
    }
    while (acked < count) usleep(1000);
    double took = now_s() - start;
    printf("published=%ld acked=%ld seconds=%.3f\n", count, (long)acked, took);
    mosquitto_disconnect(m);
    mosquitto_loop_stop(m, false);
    mosquitto_destroy(m);
    mosquitto_lib_cleanup();
    return 0;
}
