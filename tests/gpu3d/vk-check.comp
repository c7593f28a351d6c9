// vk-check's compute shader: each invocation writes one word of the
// storage buffer, a function of its index and the frame's push constant,
// which the program checks on the CPU.
#version 450
layout(local_size_x = 64) in;
layout(std430, binding = 0) buffer Out { uint v[]; };
layout(push_constant) uniform Frame { uint k; };
void main()
{
    uint i = gl_GlobalInvocationID.x;
    v[i] = i * 2654435761u + k;
}
