fn main() {
    let dev = tch::Device::cuda_if_available();
    println!("lorkd-train: device {dev:?}");
}
