/*
 * A Vulkan program for the 3D tests: on the first physical device, N
 * frames of one compute dispatch each (tests/gpu3d/vk-check.comp, 64
 * invocations a group) that write a storage buffer in host-visible,
 * host-coherent memory, each frame's words read back through the mapping
 * and checked. Prints one line:
 *
 *   VKCHECK ok device=<deviceName> frames=<N> fps=<F>
 *   VKCHECK FAIL <why>
 *
 * In the guest it runs on Mesa's venus driver through gpu-airlock (the
 * buffer's memory is a host blob mapped into the guest); on the host, the
 * same program on lavapipe directly is what the frame rate is compared
 * with (tests/gpu3d/check, tests/tests/gpu3d.rs).
 *
 *   vk-check [FRAMES] [WORDS]
 *
 * C, not Rust: built with the Vulkan headers of the root it runs in
 * (tests/gpu3d/check builds it there, with the shader compiled by
 * glslang into vk-check.spv.h), and no crate of this workspace speaks
 * Vulkan.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <vulkan/vulkan.h>

#include "vk-check.spv.h"

static int fail(const char *why, VkResult r)
{
    printf("VKCHECK FAIL %s (VkResult %d)\n", why, r);
    return 1;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

#define CHECK(call, why)                    \
    do {                                    \
        VkResult r_ = (call);               \
        if (r_ != VK_SUCCESS)               \
            return fail(why, r_);           \
    } while (0)

int main(int argc, char **argv)
{
    int frames = argc > 1 ? atoi(argv[1]) : 30;
    uint32_t words = argc > 2 ? (uint32_t)atoi(argv[2]) : 65536;
    if (frames < 1 || words < 64 || words % 64 || words > (1u << 24))
        return fail("usage: vk-check [FRAMES] [WORDS, a multiple of 64]", VK_SUCCESS);
    VkDeviceSize bytes = (VkDeviceSize)words * 4;

    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "vk-check",
        .apiVersion = VK_API_VERSION_1_1,
    };
    VkInstanceCreateInfo ici = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .pApplicationInfo = &app,
    };
    VkInstance instance;
    CHECK(vkCreateInstance(&ici, NULL, &instance), "vkCreateInstance");
    uint32_t count = 1;
    VkPhysicalDevice phys;
    VkResult er = vkEnumeratePhysicalDevices(instance, &count, &phys);
    if ((er != VK_SUCCESS && er != VK_INCOMPLETE) || count == 0)
        return fail("no physical device", er);
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(phys, &props);

    uint32_t nfamilies = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(phys, &nfamilies, NULL);
    VkQueueFamilyProperties families[16];
    if (nfamilies > 16)
        nfamilies = 16;
    vkGetPhysicalDeviceQueueFamilyProperties(phys, &nfamilies, families);
    uint32_t family = UINT32_MAX;
    for (uint32_t i = 0; i < nfamilies; i++)
        if (families[i].queueFlags & VK_QUEUE_COMPUTE_BIT) {
            family = i;
            break;
        }
    if (family == UINT32_MAX)
        return fail("no compute queue", VK_SUCCESS);

    float priority = 1.0f;
    VkDeviceQueueCreateInfo qci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
        .queueFamilyIndex = family,
        .queueCount = 1,
        .pQueuePriorities = &priority,
    };
    VkDeviceCreateInfo dci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
        .queueCreateInfoCount = 1,
        .pQueueCreateInfos = &qci,
    };
    VkDevice dev;
    CHECK(vkCreateDevice(phys, &dci, NULL, &dev), "vkCreateDevice");
    VkQueue queue;
    vkGetDeviceQueue(dev, family, 0, &queue);

    /* The storage buffer, in memory the CPU maps: on venus, a host blob
     * mapped into the guest's host-visible region. */
    VkBufferCreateInfo bci = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = bytes,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    VkBuffer buffer;
    CHECK(vkCreateBuffer(dev, &bci, NULL, &buffer), "vkCreateBuffer");
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(dev, buffer, &req);
    VkPhysicalDeviceMemoryProperties mem;
    vkGetPhysicalDeviceMemoryProperties(phys, &mem);
    VkMemoryPropertyFlags want =
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    uint32_t type = UINT32_MAX;
    for (uint32_t i = 0; i < mem.memoryTypeCount; i++)
        if ((req.memoryTypeBits & (1u << i)) && (mem.memoryTypes[i].propertyFlags & want) == want) {
            type = i;
            break;
        }
    if (type == UINT32_MAX)
        return fail("no host-visible, host-coherent memory type", VK_SUCCESS);
    VkMemoryAllocateInfo mai = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
        .allocationSize = req.size,
        .memoryTypeIndex = type,
    };
    VkDeviceMemory memory;
    CHECK(vkAllocateMemory(dev, &mai, NULL, &memory), "vkAllocateMemory");
    CHECK(vkBindBufferMemory(dev, buffer, memory, 0), "vkBindBufferMemory");
    uint32_t *mapped;
    CHECK(vkMapMemory(dev, memory, 0, bytes, 0, (void **)&mapped), "vkMapMemory");

    VkShaderModuleCreateInfo smci = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
        .codeSize = sizeof(vk_check_spv),
        .pCode = vk_check_spv,
    };
    VkShaderModule module;
    CHECK(vkCreateShaderModule(dev, &smci, NULL, &module), "vkCreateShaderModule");
    VkDescriptorSetLayoutBinding binding = {
        .binding = 0,
        .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
        .descriptorCount = 1,
        .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
    };
    VkDescriptorSetLayoutCreateInfo dslci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .bindingCount = 1,
        .pBindings = &binding,
    };
    VkDescriptorSetLayout set_layout;
    CHECK(vkCreateDescriptorSetLayout(dev, &dslci, NULL, &set_layout), "descriptor set layout");
    VkPushConstantRange push = {
        .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        .size = 4,
    };
    VkPipelineLayoutCreateInfo plci = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
        .setLayoutCount = 1,
        .pSetLayouts = &set_layout,
        .pushConstantRangeCount = 1,
        .pPushConstantRanges = &push,
    };
    VkPipelineLayout layout;
    CHECK(vkCreatePipelineLayout(dev, &plci, NULL, &layout), "pipeline layout");
    VkComputePipelineCreateInfo cpci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {
            .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
            .stage = VK_SHADER_STAGE_COMPUTE_BIT,
            .module = module,
            .pName = "main",
        },
        .layout = layout,
    };
    VkPipeline pipeline;
    CHECK(vkCreateComputePipelines(dev, VK_NULL_HANDLE, 1, &cpci, NULL, &pipeline),
          "compute pipeline");

    VkDescriptorPoolSize pool_size = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1};
    VkDescriptorPoolCreateInfo dpci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
        .maxSets = 1,
        .poolSizeCount = 1,
        .pPoolSizes = &pool_size,
    };
    VkDescriptorPool pool;
    CHECK(vkCreateDescriptorPool(dev, &dpci, NULL, &pool), "descriptor pool");
    VkDescriptorSetAllocateInfo dsai = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
        .descriptorPool = pool,
        .descriptorSetCount = 1,
        .pSetLayouts = &set_layout,
    };
    VkDescriptorSet set;
    CHECK(vkAllocateDescriptorSets(dev, &dsai, &set), "descriptor set");
    VkDescriptorBufferInfo dbi = {buffer, 0, bytes};
    VkWriteDescriptorSet write = {
        .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
        .dstSet = set,
        .descriptorCount = 1,
        .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
        .pBufferInfo = &dbi,
    };
    vkUpdateDescriptorSets(dev, 1, &write, 0, NULL);

    VkCommandPoolCreateInfo cpoolci = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
        .queueFamilyIndex = family,
    };
    VkCommandPool cpool;
    CHECK(vkCreateCommandPool(dev, &cpoolci, NULL, &cpool), "command pool");
    VkCommandBufferAllocateInfo cbai = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .commandPool = cpool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = 1,
    };
    VkCommandBuffer cmd;
    CHECK(vkAllocateCommandBuffers(dev, &cbai, &cmd), "command buffer");
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VkFence fence;
    CHECK(vkCreateFence(dev, &fci, NULL, &fence), "fence");

    double start = now();
    for (int f = 0; f < frames; f++) {
        uint32_t k = 0x9e3779b9u * (uint32_t)(f + 1);
        VkCommandBufferBeginInfo cbbi = {
            .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
            .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
        };
        CHECK(vkBeginCommandBuffer(cmd, &cbbi), "begin");
        vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline);
        vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, layout, 0, 1, &set, 0, NULL);
        vkCmdPushConstants(cmd, layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, 4, &k);
        vkCmdDispatch(cmd, words / 64, 1, 1);
        VkMemoryBarrier barrier = {
            .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
            .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
            .dstAccessMask = VK_ACCESS_HOST_READ_BIT,
        };
        vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                             VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &barrier, 0, NULL, 0, NULL);
        CHECK(vkEndCommandBuffer(cmd), "end");
        VkSubmitInfo si = {
            .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
            .commandBufferCount = 1,
            .pCommandBuffers = &cmd,
        };
        CHECK(vkQueueSubmit(queue, 1, &si, fence), "vkQueueSubmit");
        CHECK(vkWaitForFences(dev, 1, &fence, VK_TRUE, 10000000000ull), "vkWaitForFences");
        CHECK(vkResetFences(dev, 1, &fence), "vkResetFences");
        for (uint32_t i = 0; i < words; i++) {
            uint32_t expect = i * 2654435761u + k;
            if (mapped[i] != expect) {
                printf("VKCHECK FAIL frame %d word %u is %#x, not %#x\n", f, i, mapped[i], expect);
                return 1;
            }
        }
    }
    double fps = frames / (now() - start);
    printf("VKCHECK ok device=%s frames=%d fps=%.1f\n", props.deviceName, frames, fps);

    vkDestroyFence(dev, fence, NULL);
    vkDestroyCommandPool(dev, cpool, NULL);
    vkDestroyDescriptorPool(dev, pool, NULL);
    vkDestroyPipeline(dev, pipeline, NULL);
    vkDestroyPipelineLayout(dev, layout, NULL);
    vkDestroyDescriptorSetLayout(dev, set_layout, NULL);
    vkDestroyShaderModule(dev, module, NULL);
    vkUnmapMemory(dev, memory);
    vkFreeMemory(dev, memory, NULL);
    vkDestroyBuffer(dev, buffer, NULL);
    vkDestroyDevice(dev, NULL);
    vkDestroyInstance(instance, NULL);
    return 0;
}
