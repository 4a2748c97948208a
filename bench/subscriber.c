/* Second baseline for the ingest benchmark: a libmosquitto QoS 1 subscriber that does nothing per message but
 * count; the fastest a client on this broker and machine can take the stream.
 *
 * usage: subscriber HOST PORT PREFIX COUNT
 * Subscribes like the ingest worker (persistent session, QoS 1, PREFIX/+/telemetry), prints "ready" once the
 * broker has acknowledged the subscription and "done" when COUNT messages have arrived.
 */
#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long received = 0;
static long wanted = 0;

static void on_connect(struct mosquitto *m, void *obj, int rc) {
    const char *topic = (const char *)obj;
    if (rc == 0) mosquitto_subscribe(m, NULL, topic, 1);
}

static void on_subscribe(struct mosquitto *m, void *obj, int mid, int qos_count, const int *granted) {
    (void)m; (void)obj; (void)mid; (void)qos_count; (void)granted;
    printf("ready\n");
    fflush(stdout);
}

static void on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg) {
    (void)obj; (void)msg;
    if (++received == wanted) {
        printf("done\n");
        fflush(stdout);
        mosquitto_disconnect(m);
    }
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s HOST PORT PREFIX COUNT\n", argv[0]);
        return 2;
    }
    char topic[256], client_id[128];
    snprintf(topic, sizeof topic, "%s/+/telemetry", argv[3]);
    snprintf(client_id, sizeof client_id, "csub-%s", argv[3]);
    wanted = atol(argv[4]);
    mosquitto_lib_init();
    struct mosquitto *m = mosquitto_new(client_id, false, topic);
    mosquitto_max_inflight_messages_set(m, 1000);
    mosquitto_connect_callback_set(m, on_connect);
    mosquitto_subscribe_callback_set(m, on_subscribe);
    mosquitto_message_callback_set(m, on_message);
    if (mosquitto_connect(m, argv[1], atoi(argv[2]), 60) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "cannot connect to %s:%s\n", argv[1], argv[2]);
        return 1;
    }
    mosquitto_loop_forever(m, -1, 1);  /* returns after the disconnect in on_message */
    mosquitto_destroy(m);
    mosquitto_lib_cleanup();
    return received >= wanted ? 0 : 1;
}
