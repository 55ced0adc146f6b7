#include "formats/dtype.h"

#include "core/error.h"

namespace upcycle {

std::size_t dtypeSize(DType t) {
  switch (t) {
    case DType::Bool: case DType::U8: case DType::I8: return 1;
    case DType::I16: case DType::U16: case DType::F16: case DType::BF16: return 2;
    case DType::I32: case DType::U32: case DType::F32: return 4;
    case DType::I64: case DType::U64: case DType::F64: return 8;
  }
  UPCYCLE_ASSERT(false, "bad dtype");
}

std::string dtypeName(DType t) {
  switch (t) {
    case DType::Bool: return "BOOL";
    case DType::U8: return "U8";
    case DType::I8: return "I8";
    case DType::I16: return "I16";
    case DType::U16: return "U16";
    case DType::I32: return "I32";
    case DType::U32: return "U32";
    case DType::I64: return "I64";
    case DType::U64: return "U64";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F32: return "F32";
    case DType::F64: return "F64";
  }
  UPCYCLE_ASSERT(false, "bad dtype");
}

DType parseDType(const std::string& name, const std::string& context) {
  static const DType all[] = {DType::Bool, DType::U8,  DType::I8,  DType::I16, DType::U16,
                              DType::I32,  DType::U32, DType::I64, DType::U64, DType::F16,
                              DType::BF16, DType::F32, DType::F64};
  for (DType t : all)
    if (dtypeName(t) == name) return t;
  UPCYCLE_CHECK(name.rfind("F8", 0) != 0, context, ": dtype ", name,
                " (8-bit float) is not supported; convert the checkpoint to BF16 or F32 first");
  throw UserError(context + ": unknown dtype \"" + name + "\"");
}

DType dtypeFromTorchName(const std::string& name, const std::string& context) {
  if (name == "float32" || name == "float") return DType::F32;
  if (name == "bfloat16") return DType::BF16;
  if (name == "float16" || name == "half") return DType::F16;
  throw UserError(context + ": unsupported torch_dtype \"" + name +
                  "\" (expected float32, bfloat16 or float16)");
}

std::string torchNameOf(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    default: throw UserError("dtype " + dtypeName(t) + " is not a floating weight type");
  }
}

}  // namespace upcycle
