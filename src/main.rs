fn main() {
    println!("aigw");
}
