"""The supervisor side: one asyncio process that never touches a frame.

It starts workers (spawn), reads their small messages over async pipes, restarts them when they
crash or hang, and hands results to the MQTT publisher and the health reporter. It never imports
a backend, ONNX Runtime or OpenCV's frame code.
"""
