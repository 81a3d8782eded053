fn main() {
    println!("gmat");
}
