# Runs inside real MicroPython (tools/micropython/run.mjs), started by tests/firmware/test_micropython.py.
#
# Imports every firmware module that does not touch hardware (listed in /modules.txt), runs the shared control
# and firmware cases, and measures the heap: what the modules take, what one Device takes, the bytes one loop
# iteration allocates, and whether the heap left after each iteration's gc.collect() grows. Prints one JSON line
# prefixed RESULT. "# @top-level" lines split it into top-level calls: this port only collects garbage between
# them (see run.mjs), so every measured loop iteration is its own call, like a loop on the board.
import gc
import json
import sys

gc.collect()
# @top-level
heap_start = gc.mem_alloc()
with open("/modules.txt") as handle:
    MODULES = [line.strip() for line in handle if line.strip()]
imported = []
for name in MODULES:
    __import__(name)
    imported.append(name)
gc.collect()
# @top-level
heap_modules = gc.mem_alloc() - heap_start

import control  # noqa: E402
import control_cases  # noqa: E402
import firmware_cases  # noqa: E402

control_passed = control_cases.run_all(control.Thermostat)
firmware_passed = firmware_cases.run_all("/tmp")


def quiet(rig):
    rig.device._log = lambda message: None
    rig.device.link._log = lambda message: None
    rig.broker.keep = 8  # the fake broker's log must not grow during the measurement


def alloc_per_step(rig, loops):
    # Bytes allocated by one iteration (inside one top-level call nothing is freed, so the difference is exact).
    total = 0
    peak = 0
    for _ in range(loops):
        before = gc.mem_alloc()
        rig.device.step()
        used = gc.mem_alloc() - before
        rig.ticks.advance(0.5)
        total += used
        peak = max(peak, used)
    return total // loops, peak


class Track:
    """Heap retained at the start of each identical one-line chunk (a chunk's own bytecode is live then too)."""

    low = None
    high = None
    loops = 0
    window = 200
    first_high = 0  # highest value over the first ``window`` samples
    last_high = 0  # highest value over the latest ``window`` samples

    @classmethod
    def sample(cls):
        value = gc.mem_alloc()
        cls.low = value if cls.low is None else min(cls.low, value)
        cls.high = value if cls.high is None else max(cls.high, value)
        if cls.loops < cls.window:
            cls.first_high = max(cls.first_high, value)
        if cls.loops % cls.window == 0:
            cls.last_high = 0
        cls.last_high = max(cls.last_high, value)


def step_online():
    # Heap retained after the previous iteration's gc.collect() (run at the top-level boundary), then one loop.
    Track.sample()
    i = Track.loops
    if i % 200 == 100:  # a command every 100 s of device time, alternating targets
        target = "22.0" if i % 400 == 100 else "21.0"
        rig.broker.deliver(firmware_cases.TOPIC["cmd"], ('{"request_id": "m' + str(i) + '", "target_temp": '
                                                         + target + "}").encode())
    rig.device.step()
    rig.ticks.advance(0.5)
    Track.loops += 1


gc.collect()
# @top-level
before_device = gc.mem_alloc()
rig = firmware_cases.Rig("/tmp", "heap", buffer={"max_readings": 120})
quiet(rig)
gc.collect()
# @top-level
heap_device = gc.mem_alloc() - before_device
rig.run(100)  # warm up online: connect, publish, settle
for n in range(20):  # fill the bounded memory of recent request ids, so steady state starts here
    rig.command(('{"request_id": "w' + str(n) + '", "target_temp": 21.0}').encode())
gc.collect()
# @top-level
steady_start = gc.mem_alloc()
# @top-level repeat=2000
step_online()
# @top-level
steady_end = gc.mem_alloc()
online_low, online_high = Track.low, Track.high
online_first_high, online_last_high = Track.first_high, Track.last_high
alloc_online, alloc_online_peak = alloc_per_step(rig, 100)
rig.broker.drop()
rig.run(1)
Track.low = Track.high = None
gc.collect()
# @top-level
empty_buffer = gc.mem_alloc()
# @top-level repeat=600
Track.sample()
rig.device.step()
rig.ticks.advance(0.5)
gc.collect()
# @top-level
full_buffer = gc.mem_alloc()
alloc_offline, alloc_offline_peak = alloc_per_step(rig, 100)
buffered = len(rig.device.buffer)
dropped = rig.device.buffer.dropped
rig.broker.restore()
rig.run(60)
drained = len(rig.device.buffer)

result = {
    "implementation": sys.implementation.name,
    "version": list(sys.implementation.version[:3]),
    "imported": imported,
    "control_passed": control_passed,
    "firmware_passed": firmware_passed,
    "heap": {
        "modules": heap_modules,
        "device": heap_device,
        "online_loops": Track.loops,
        "online_retained_start": steady_start,
        "online_retained_end": steady_end,
        "online_retained_low": online_low,
        "online_first_window_high": online_first_high,
        "online_last_window_high": online_last_high,
        "online_retained_high": online_high,
        "offline_retained_low": Track.low,
        "offline_retained_high": Track.high,
        "alloc_per_loop_online": alloc_online,
        "alloc_per_loop_online_peak": alloc_online_peak,
        "alloc_per_loop_offline": alloc_offline,
        "alloc_per_loop_offline_peak": alloc_offline_peak,
        "full_buffer_extra": full_buffer - empty_buffer,
        "buffer_capacity": rig.device.buffer.capacity,
        "buffered": buffered,
        "dropped": dropped,
        "left_after_drain": drained,
    },
}
print("RESULT " + json.dumps(result))
