"""A pyACL program written the way Huawei's samples are (acllite's AclLiteResource, VideoCapture
with a VDEC callback thread, AclLiteImageProc.crop_and_paste and AclLiteModel), so the tests can
check that the emulator runs such code unchanged. It knows nothing of the emulator.

    python sample_pipeline.py MODEL.om VIDEO FRAMES      -> one JSON line per frame on stdout

Each line: {"frame": n, "classes": {class_id: count of rows scoring >= 0.4}}.
"""

from __future__ import annotations

import json
import queue
import sys

import acl
import av
import av.bitstream
import numpy as np

ACL_MEM_MALLOC_NORMAL_ONLY = 2
ACL_MEMCPY_HOST_TO_DEVICE = 1
ACL_MEMCPY_DEVICE_TO_HOST = 2
ACL_MEMCPY_DEVICE_TO_DEVICE = 3
ACL_HOST = 1
PIXEL_FORMAT_YUV_SEMIPLANAR_420 = 1
ENTYPE = {66: 1, 77: 2, 100: 3}
NPY_FLOAT32 = 11

run_mode, _ = acl.rt.get_run_mode()  # as acllite_image.py does, at import, before acl.init


def check_ret(message, ret):
    if ret != 0:
        raise Exception(f"{message} failed ret={ret}: {acl.get_recent_err_msg()}")


def align_up(value, align):
    return (value + align - 1) // align * align


def host_to_device_kind():
    return ACL_MEMCPY_HOST_TO_DEVICE if run_mode == ACL_HOST else ACL_MEMCPY_DEVICE_TO_DEVICE


def device_to_host_kind():
    return ACL_MEMCPY_DEVICE_TO_HOST if run_mode == ACL_HOST else ACL_MEMCPY_DEVICE_TO_DEVICE


class AclResource:
    def __init__(self, device_id=0):
        self.device_id = device_id
        self.context = None
        self.stream = None

    def init(self):
        check_ret("acl.init", acl.init())
        check_ret("acl.rt.set_device", acl.rt.set_device(self.device_id))
        self.context, ret = acl.rt.create_context(self.device_id)
        check_ret("acl.rt.create_context", ret)
        self.stream, ret = acl.rt.create_stream()
        check_ret("acl.rt.create_stream", ret)

    def release(self):
        check_ret("acl.rt.destroy_stream", acl.rt.destroy_stream(self.stream))
        check_ret("acl.rt.destroy_context", acl.rt.destroy_context(self.context))
        check_ret("acl.rt.reset_device", acl.rt.reset_device(self.device_id))
        check_ret("acl.finalize", acl.finalize())


class Vdec:
    """VDEC with a callback thread; one input buffer per frame (acllite reuses one: a bug)."""

    def __init__(self, context, channel_id, width, height, entype):
        self._context = context
        self._width, self._height = width, height
        self._running = True
        self.frames = queue.Queue(256)
        self.sent = 0
        self._thread_id, ret = acl.util.start_thread(self._thread_func, [context])
        check_ret("acl.util.start_thread", ret)
        self._channel_desc = acl.media.vdec_create_channel_desc()
        acl.media.vdec_set_channel_desc_channel_id(self._channel_desc, channel_id)
        acl.media.vdec_set_channel_desc_thread_id(self._channel_desc, self._thread_id)
        acl.media.vdec_set_channel_desc_callback(self._channel_desc, self._callback)
        acl.media.vdec_set_channel_desc_entype(self._channel_desc, entype)
        acl.media.vdec_set_channel_desc_out_pic_format(
            self._channel_desc, PIXEL_FORMAT_YUV_SEMIPLANAR_420
        )
        out_mode = acl.media.vdec_get_channel_desc_out_mode(self._channel_desc)
        acl.media.vdec_set_channel_desc_out_mode(self._channel_desc, out_mode)
        ret = acl.media.vdec_create_channel(self._channel_desc)
        check_ret("acl.media.vdec_create_channel", ret)
        self._frame_config = acl.media.vdec_create_frame_config()

    def _thread_func(self, args_list):
        context = args_list[0]
        acl.rt.set_context(context)
        while self._running:
            acl.rt.process_report(300)

    def _callback(self, input_stream_desc, output_pic_desc, user_data):
        if input_stream_desc:
            acl.media.dvpp_free(acl.media.dvpp_get_stream_desc_data(input_stream_desc))
            acl.media.dvpp_destroy_stream_desc(input_stream_desc)
        if output_pic_desc:
            data = acl.media.dvpp_get_pic_desc_data(output_pic_desc)
            size = acl.media.dvpp_get_pic_desc_size(output_pic_desc)
            ret_code = acl.media.dvpp_get_pic_desc_ret_code(output_pic_desc)
            acl.media.dvpp_destroy_pic_desc(output_pic_desc)
            if ret_code == 0:
                self.frames.put((user_data[1], data, size))
            else:
                acl.media.dvpp_free(data)
                self.frames.put((user_data[1], None, 0))

    def send(self, packet, frame_no):
        in_buffer, ret = acl.media.dvpp_malloc(len(packet))
        check_ret("acl.media.dvpp_malloc", ret)
        ret = acl.rt.memcpy(in_buffer, len(packet), acl.util.bytes_to_ptr(packet), len(packet),
                            host_to_device_kind())
        check_ret("acl.rt.memcpy", ret)
        stream_desc = acl.media.dvpp_create_stream_desc()
        acl.media.dvpp_set_stream_desc_size(stream_desc, len(packet))
        acl.media.dvpp_set_stream_desc_data(stream_desc, in_buffer)
        out_size = align_up(self._width, 16) * align_up(self._height, 2) * 3 // 2
        out_buffer, ret = acl.media.dvpp_malloc(out_size)
        check_ret("acl.media.dvpp_malloc", ret)
        pic_desc = acl.media.dvpp_create_pic_desc()
        acl.media.dvpp_set_pic_desc_data(pic_desc, out_buffer)
        acl.media.dvpp_set_pic_desc_size(pic_desc, out_size)
        acl.media.dvpp_set_pic_desc_format(pic_desc, PIXEL_FORMAT_YUV_SEMIPLANAR_420)
        ret = acl.media.vdec_send_frame(self._channel_desc, stream_desc, pic_desc,
                                        self._frame_config, [0, frame_no])
        check_ret("acl.media.vdec_send_frame", ret)
        self.sent += 1

    def destroy(self):
        check_ret("acl.media.vdec_destroy_channel",
                  acl.media.vdec_destroy_channel(self._channel_desc))
        acl.media.vdec_destroy_channel_desc(self._channel_desc)
        acl.media.vdec_destroy_frame_config(self._frame_config)
        self._running = False
        acl.util.stop_thread(self._thread_id)


class ImageProc:
    def __init__(self, stream):
        self._stream = stream
        self._channel_desc = acl.media.dvpp_create_channel_desc()
        ret = acl.media.dvpp_create_channel(self._channel_desc)
        check_ret("acl.media.dvpp_create_channel", ret)

    def _pic_desc(self, data, width, height, width_stride, height_stride):
        desc = acl.media.dvpp_create_pic_desc()
        acl.media.dvpp_set_pic_desc_data(desc, data)
        acl.media.dvpp_set_pic_desc_format(desc, PIXEL_FORMAT_YUV_SEMIPLANAR_420)
        acl.media.dvpp_set_pic_desc_width(desc, width)
        acl.media.dvpp_set_pic_desc_height(desc, height)
        acl.media.dvpp_set_pic_desc_width_stride(desc, width_stride)
        acl.media.dvpp_set_pic_desc_height_stride(desc, height_stride)
        acl.media.dvpp_set_pic_desc_size(desc, width_stride * height_stride * 3 // 2)
        return desc

    def letterbox(self, data, width, height, out_buffer, out_width, out_height):
        ratio = min(out_width / width, out_height / height)
        paste_w = int(width * ratio) // 2 * 2
        paste_h = int(height * ratio) // 2 * 2
        input_desc = self._pic_desc(data, width, height, align_up(width, 16), align_up(height, 2))
        output_desc = self._pic_desc(out_buffer, out_width, out_height,
                                     align_up(out_width, 16), align_up(out_height, 2))
        crop = acl.media.dvpp_create_roi_config(0, (width >> 1 << 1) - 1, 0,
                                                (height >> 1 << 1) - 1)
        paste = acl.media.dvpp_create_roi_config(0, paste_w - 1, 0, paste_h - 1)
        ret = acl.media.dvpp_vpc_crop_and_paste_async(self._channel_desc, input_desc,
                                                      output_desc, crop, paste, self._stream)
        check_ret("acl.media.dvpp_vpc_crop_and_paste_async", ret)
        check_ret("acl.rt.synchronize_stream", acl.rt.synchronize_stream(self._stream))
        acl.media.dvpp_destroy_roi_config(crop)
        acl.media.dvpp_destroy_roi_config(paste)
        acl.media.dvpp_destroy_pic_desc(input_desc)
        acl.media.dvpp_destroy_pic_desc(output_desc)

    def destroy(self):
        acl.media.dvpp_destroy_channel(self._channel_desc)
        acl.media.dvpp_destroy_channel_desc(self._channel_desc)


class Model:
    def __init__(self, model_path):
        self._model_id, ret = acl.mdl.load_from_file(model_path)
        check_ret("acl.mdl.load_from_file", ret)
        self._desc = acl.mdl.create_desc()
        check_ret("acl.mdl.get_desc", acl.mdl.get_desc(self._desc, self._model_id))
        self._output_dataset = acl.mdl.create_dataset()
        self._outputs = []
        for i in range(acl.mdl.get_num_outputs(self._desc)):
            size = acl.mdl.get_output_size_by_index(self._desc, i)
            buffer, ret = acl.rt.malloc(size, ACL_MEM_MALLOC_NORMAL_ONLY)
            check_ret("acl.rt.malloc", ret)
            dims, ret = acl.mdl.get_output_dims(self._desc, i)
            self._outputs.append((buffer, size, dims["dims"]))
            data_buffer = acl.create_data_buffer(buffer, size)
            _, ret = acl.mdl.add_dataset_buffer(self._output_dataset, data_buffer)
            check_ret("acl.mdl.add_dataset_buffer", ret)
        self.input_size = acl.mdl.get_input_size_by_index(self._desc, 0)
        self._dynamic_index, ret = acl.mdl.get_input_index_by_name(
            self._desc, "ascend_mbatch_shape_data")
        if ret != 0:
            self._dynamic_index = -1
        self._dynamic_buffer = None
        if self._dynamic_index >= 0:
            size = acl.mdl.get_input_size_by_index(self._desc, self._dynamic_index)
            self._dynamic_buffer, ret = acl.rt.malloc(size, ACL_MEM_MALLOC_NORMAL_ONLY)
            check_ret("acl.rt.malloc", ret)
            self._dynamic_size = size

    def execute(self, input_buffer, batch):
        dataset = acl.mdl.create_dataset()
        buffers = [acl.create_data_buffer(input_buffer, self.input_size)]
        if self._dynamic_index >= 0:
            buffers.append(acl.create_data_buffer(self._dynamic_buffer, self._dynamic_size))
        for data_buffer in buffers:
            _, ret = acl.mdl.add_dataset_buffer(dataset, data_buffer)
            check_ret("acl.mdl.add_dataset_buffer", ret)
        if self._dynamic_index >= 0:
            ret = acl.mdl.set_dynamic_batch_size(self._model_id, dataset, self._dynamic_index,
                                                 batch)
            check_ret("acl.mdl.set_dynamic_batch_size", ret)
        check_ret("acl.mdl.execute", acl.mdl.execute(self._model_id, dataset,
                                                     self._output_dataset))
        for data_buffer in buffers:
            acl.destroy_data_buffer(data_buffer)
        acl.mdl.destroy_dataset(dataset)
        results = []
        for buffer, size, dims in self._outputs:
            host = np.zeros(size // 4, np.float32).tobytes()
            ret = acl.rt.memcpy(acl.util.bytes_to_ptr(host), size, buffer, size,
                                device_to_host_kind())
            check_ret("acl.rt.memcpy", ret)
            results.append(np.frombuffer(host, np.float32).reshape(dims))
        return results

    def destroy(self):
        for i in range(acl.mdl.get_dataset_num_buffers(self._output_dataset)):
            acl.destroy_data_buffer(acl.mdl.get_dataset_buffer(self._output_dataset, i))
        acl.mdl.destroy_dataset(self._output_dataset)
        for buffer, _, _ in self._outputs:
            acl.rt.free(buffer)
        if self._dynamic_buffer is not None:
            acl.rt.free(self._dynamic_buffer)
        check_ret("acl.mdl.unload", acl.mdl.unload(self._model_id))
        acl.mdl.destroy_desc(self._desc)


def annexb_packets(path, limit):
    container = av.open(path)
    stream = container.streams.video[0]
    extradata = stream.codec_context.extradata or b""
    bsf = None
    if not extradata.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")) and extradata:
        bsf = av.bitstream.BitStreamFilterContext("h264_mp4toannexb", stream)
    count = 0
    for packet in container.demux(stream):
        for out in (bsf.filter(packet) if bsf else [packet]):
            if out.size:
                yield bytes(out)
                count += 1
                if count >= limit:
                    container.close()
                    return
    container.close()


def main(model_path, video, frames):
    resource = AclResource(0)
    resource.init()
    container = av.open(video)
    codec = container.streams.video[0].codec_context
    width, height, profile = codec.width, codec.height, codec.profile
    container.close()
    entype = ENTYPE.get({"Baseline": 66, "Main": 77, "High": 100}.get(profile, 77), 2)
    model = Model(model_path)
    proc = ImageProc(resource.stream)
    vdec = Vdec(resource.context, 0, width, height, entype)
    model_in_size = model.input_size
    model_in, ret = acl.media.dvpp_malloc(model_in_size)
    check_ret("acl.media.dvpp_malloc", ret)
    # 416 x 416 NV12: grey pad (Y 114, UV 128), VPC writes only the picture.
    acl.rt.memset(model_in, model_in_size, 114, 416 * 416)
    acl.rt.memset(model_in + 416 * 416, model_in_size - 416 * 416, 128, 416 * 416 // 2)
    for i, packet in enumerate(annexb_packets(video, frames)):
        vdec.send(packet, i)
    # As acllite does: no EOS frame; destroying the channel decodes what was sent and runs
    # every callback before it returns (the decoder holds a frame or two back until then).
    vdec.destroy()
    done = 0
    while done < vdec.sent:
        frame_no, data, _ = vdec.frames.get(timeout=30)
        done += 1
        if data is None:
            print(json.dumps({"frame": frame_no, "classes": None}), flush=True)
            continue
        proc.letterbox(data, width, height, model_in, 416, 416)
        acl.media.dvpp_free(data)
        (output,) = model.execute(model_in, 1)
        rows = output[0]
        scores = rows[:, 4:5] * rows[:, 5:]
        best = scores.max(axis=1)
        ids = scores.argmax(axis=1)[best >= 0.4]
        counts = {int(c): int((ids == c).sum()) for c in np.unique(ids)}
        print(json.dumps({"frame": frame_no, "classes": counts}), flush=True)
    acl.media.dvpp_free(model_in)
    proc.destroy()
    model.destroy()
    resource.release()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
