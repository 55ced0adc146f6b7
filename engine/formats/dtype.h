#pragma once
// Element types of safetensors files, torch-free. Thread-safety: pure functions.
#include <cstddef>
#include <cstdint>
#include <string>

namespace upcycle {

enum class DType { Bool, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64 };

std::size_t dtypeSize(DType t);
std::string dtypeName(DType t);  // safetensors spelling: "F32", "BF16", ...
// Parses a safetensors dtype name; throws UserError naming `context` for unknown or F8 types.
DType parseDType(const std::string& name, const std::string& context);
// HF config "torch_dtype" ("float32", "bfloat16", "float16") <-> DType.
DType dtypeFromTorchName(const std::string& name, const std::string& context);
std::string torchNameOf(DType t);

}  // namespace upcycle
