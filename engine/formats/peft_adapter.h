#pragma once
// PEFT LoRA adapter folders (FORMATS.md, "PEFT LoRA adapters"), torch-free: adapter_config.json read and
// checked, and the LoRA settings' parsing and validation (api/lora.h). The tensors are model/lora.h's.
#include <filesystem>
#include <string>

#include "api/lora.h"

namespace upcycle {

// Whether `folder` is a PEFT adapter folder (adapter_config.json).
bool isPeftAdapter(const std::filesystem::path& folder);
struct PeftAdapterInfo {
  LoraOptions lora;
  std::string baseName;            // base_model_name_or_path as written
  std::filesystem::path basePath;  // resolved: absolute, or relative to the adapter folder, or to the
                                   // working directory; empty when none of these is a folder
};
// Reads and checks adapter_config.json (LoRA only; DoRA, bias, fan_in_fan_out, layer or rank patterns
// and modules_to_save are refused by name). Throws UserError naming the file and field.
PeftAdapterInfo readPeftAdapterConfig(const std::filesystem::path& folder);
}  // namespace upcycle
