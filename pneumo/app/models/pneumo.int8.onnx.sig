{
 "algorithm": "ed25519",
 "file": "pneumo.int8.onnx",
 "sha256": "00513b177fc66e249740e2588ee578829928adee82640fd0795d778af563e1f8",
 "key_id": "12b1191efde1810f",
 "signature": "co06wAKMtYmrxq6cLYafOpaUTLVP8ZemTBjz4YTubHfZ7zGFWBeGoXi7tOvL/xWczNm+5DVJIm8W7SCvwZZoAw=="
}
