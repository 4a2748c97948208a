"""Local stand-ins for the Azure services thermolog talks to (edgeHub, IoT Edge workload API, IoT Hub)."""
