"""Machine description: keys, /proc/cpuinfo parsing."""

from pneumo.bench.machine import _cpuinfo, cpu_flags, describe, machine_info

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512vnni amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512vnni amx_int8
"""


def test_machine_info_keys():
    info = machine_info()
    for key in ("cpu_model", "architecture", "logical_cores", "physical_cores", "usable_cores",
                "cpu_flags", "memory_total_gb", "os", "python", "versions", "load_average"):
        assert key in info
    assert info["logical_cores"] >= 1 and info["usable_cores"] >= 1
    for flag in ("avx2", "avx512f", "avx512_vnni", "avx_vnni"):
        assert isinstance(info["cpu_flags"][flag], bool)
    for pkg in ("onnxruntime", "numpy", "pillow", "tensorflow"):
        assert pkg in info["versions"]
    assert info["versions"]["numpy"]  # installed in every environment that runs the tests
    assert isinstance(describe(info), str)


def test_cpuinfo_parsing_and_vnni_spelling():
    model, flags = _cpuinfo(CPUINFO)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    f = cpu_flags(flags)
    assert f["avx2"] and f["avx512f"] and f["amx_int8"]
    assert f["avx512_vnni"]  # older kernels spell it avx512vnni
    assert not f["avx_vnni"]
    assert _cpuinfo("") == ("", set())
